// pusher-js 8 or Laravel Echo 2 authorising through relay's own JWT endpoints, never an app backend:
// relay's POST /apps/<id>/auth and /apps/<id>/user-auth with `Authorization: Bearer <token>`.
//
// Params (argv[2], JSON): ws_host, ws_port, app_id, key, timeout_ms, token, and
//   library:      "pusher-js" (channelAuthorization / userAuthentication endpoints with headers) or
//                 "echo" (authEndpoint + bearerToken, as a Laravel page configures Echo)
//   token_in_url: also put the token on the WebSocket URL (?token=), which signs the connection in
//
// Commands (stdin, JSON lines):
//   {"op":"subscribe","channel":C}      pusher-js: -> "subscribed" {members} / "subscription_error"
//   {"op":"echo","kind":K,"name":N}     Echo (K: private | presence) -> "subscribed" / "subscription_error"
//   {"op":"signin"}                     pusher.signin()
//   {"op":"state"} -> "state_report";   {"op":"exit"}
// Events sent to the user: "user_event" lines (pusher.user, after signin) and "global_event" lines (pusher.bind_global).

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import { emit, installExitGuards, onCommands, plain, readParams, reportConnection, stateReport } from './lib.mjs';

const params = readParams();
installExitGuards(params);

const base = `http://${params.ws_host}:${params.ws_port}/apps/${params.app_id}`;
const connection = {
  cluster: '',
  wsHost: params.ws_host,
  wsPort: params.ws_port,
  forceTLS: false,
  enabledTransports: ['ws'],
  disableStats: true,
};

if (params.token_in_url) {
  // pusher-js builds the WebSocket URL itself; its runtime's createWebSocket is the one place to add a
  // query parameter. Called on every (re)connect, so a page can hand out a fresh token each time.
  const runtime = Pusher.Runtime;
  const createWebSocket = runtime.createWebSocket.bind(runtime);
  runtime.createWebSocket = (url) => createWebSocket(`${url}&token=${encodeURIComponent(params.token)}`);
}

let pusher;
let echo = null;
if (params.library === 'echo') {
  echo = new Echo({
    broadcaster: 'reverb',
    key: params.key,
    Pusher,
    ...connection,
    authEndpoint: `${base}/auth`,
    userAuthentication: { endpoint: `${base}/user-auth`, headers: {} },
    bearerToken: params.token,
  });
  pusher = echo.connector.pusher;
} else {
  // headersProvider is asked on every request: a page returns its current (refreshed) token there.
  const auth = { transport: 'ajax', headersProvider: () => ({ Authorization: `Bearer ${params.token}` }) };
  pusher = new Pusher(params.key, {
    ...connection,
    channelAuthorization: { endpoint: `${base}/auth`, ...auth },
    userAuthentication: { endpoint: `${base}/user-auth`, ...auth },
  });
}
reportConnection(pusher);
pusher.user.bind_global((event, data) => emit({ type: 'user_event', event, data: plain(data) }));
// Every event not handled by a channel, server-to-user events included before any pusher.signin().
pusher.bind_global((event, data) => emit({ type: 'global_event', event, data: plain(data) }));

function subscribe(name) {
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', () => {
    const members = channel.members ? { my_id: channel.members.myID, me: plain(channel.members.me) } : null;
    emit({ type: 'subscribed', channel: name, members });
  });
  channel.bind('pusher:subscription_error', (error) => {
    emit({ type: 'subscription_error', channel: name, error: plain(error) });
  });
}

function echoSubscribe(kind, name) {
  const channel = kind === 'presence' ? echo.join(name) : echo.private(name);
  channel
    .subscribed(() => emit({ type: 'subscribed', channel: name }))
    .error((error) => emit({ type: 'subscription_error', channel: name, error: plain(error) }));
  if (kind === 'presence') {
    channel.here((members) => emit({ type: 'here', channel: name, members: plain(members) }));
  }
}

onCommands((command) => {
  switch (command.op) {
    case 'subscribe':
      subscribe(command.channel);
      break;
    case 'echo':
      echoSubscribe(command.kind, command.name);
      break;
    case 'signin':
      pusher.signin();
      break;
    case 'state':
      emit(stateReport(pusher));
      break;
    default:
      emit({ type: 'unknown_command', op: command.op });
  }
});
