// pusher-js over wss:// and the official Node server SDK over https://, both through Caddy's TLS.
// Node trusts Caddy's internal CA through NODE_EXTRA_CA_CERTS, set by the test; nothing here
// turns certificate checks off.
//
// Params (argv[2], JSON): ws_host, ws_port (Caddy's HTTPS port), app_id, key, secret, timeout_ms.
// Commands (stdin, JSON lines):
//   {"op":"subscribe","channel":C}                 -> "subscribed", then "event" lines
//   {"op":"publish","channel":C,"event":E,"data":D} -> "published" {status} or "publish_failed"
// Connection lines ("connected", "state", "error", "message") as in tests/clients/js/lib.mjs.

import { createRequire } from 'node:module';
import {
  emit,
  installExitGuards,
  onCommands,
  plain,
  pusherOptions,
  readParams,
  reportConnection,
} from '../../clients/js/lib.mjs';

// The packages are installed once, in tests/clients/node_modules.
const require = createRequire(new URL('../../clients/js/lib.mjs', import.meta.url));
const Pusher = require('pusher-js');
const PusherServer = require('pusher');

const params = readParams();
installExitGuards(params);

const pusher = new Pusher(params.key, {
  ...pusherOptions(params),
  wssPort: params.ws_port,
  forceTLS: true,
  enabledTransports: ['ws'], // pusher-js's WebSocket transport; forceTLS makes it wss://
});
reportConnection(pusher);

const sdk = new PusherServer({
  appId: String(params.app_id),
  key: params.key,
  secret: params.secret,
  host: params.ws_host,
  port: String(params.ws_port),
  useTLS: true,
});

function subscribe(name) {
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', () => emit({ type: 'subscribed', channel: name }));
  channel.bind('pusher:subscription_error', (error) => {
    emit({ type: 'subscription_error', channel: name, error: plain(error) });
  });
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) {
      emit({ type: 'event', channel: name, event, data: plain(data) });
    }
  });
}

async function publish({ channel, event, data }) {
  try {
    const response = await sdk.trigger(channel, event, data);
    emit({ type: 'published', status: response.status, body: await response.text() });
  } catch (error) {
    emit({ type: 'publish_failed', error: String(error), status: error.status ?? null, body: error.body ?? null });
  }
}

onCommands((command) => {
  switch (command.op) {
    case 'subscribe':
      subscribe(command.channel);
      break;
    case 'publish':
      publish(command);
      break;
    default:
      emit({ type: 'unknown_op', op: command.op });
  }
});
