// Shared plumbing for the client scripts driven by tests/clients/*.py (see tests/support/node.py):
// parameters as JSON in argv[2], one JSON object per stdout line, JSON commands on stdin,
// exit on stdin EOF or after params.timeout_ms.
//
// Auth is done in-process by the official Node server SDK (`pusher`) with the app's key and
// secret, so relay is checked against independent signing code, never its own.

import { createInterface } from 'node:readline';
import PusherServer from 'pusher';

export function readParams() {
  const raw = process.argv[2] ?? process.env.RELAY_CLIENT_PARAMS;
  if (!raw) {
    throw new Error('expected parameters as JSON in argv[2]');
  }
  return JSON.parse(raw);
}

export function emit(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

// Report crashes as a line the test can show, then exit non-zero.
export function installExitGuards(params) {
  process.on('uncaughtException', (error) => {
    emit({ type: 'fatal', error: String(error && error.stack ? error.stack : error) });
    process.exit(3);
  });
  process.on('unhandledRejection', (error) => {
    emit({ type: 'fatal', error: String(error && error.stack ? error.stack : error) });
    process.exit(3);
  });
  const timer = setTimeout(() => {
    emit({ type: 'timeout', after_ms: params.timeout_ms });
    process.exit(2);
  }, params.timeout_ms ?? 60000);
  timer.unref();
}

// Calls handler(command) for each JSON line on stdin; exits when stdin closes (test ended).
export function onCommands(handler) {
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (text) => {
    if (!text.trim()) {
      return;
    }
    let command;
    try {
      command = JSON.parse(text);
    } catch (error) {
      emit({ type: 'bad_command', text });
      return;
    }
    if (command.op === 'exit') {
      process.exit(0);
    }
    try {
      handler(command);
    } catch (error) {
      emit({ type: 'command_failed', op: command.op, error: String(error) });
    }
  });
  lines.on('close', () => process.exit(0));
}

// The official Node server SDK, configured for the app under test. `secret` can be
// overridden to produce signatures relay must reject.
export function serverSdk(params, secret = params.secret) {
  return new PusherServer({
    appId: String(params.app_id),
    key: params.key,
    secret,
    host: params.ws_host ?? '127.0.0.1',
    port: String(params.http_port ?? params.ws_port),
    useTLS: false,
    ...(params.encryption_master_key_base64
      ? { encryptionMasterKeyBase64: params.encryption_master_key_base64 }
      : {}),
  });
}

const WRONG_SECRET = 'not-the-app-secret';

// pusher-js options for relay on ws://ws_host:ws_port, with custom handlers doing what a
// Laravel app's /broadcasting/auth and /broadcasting/user-auth endpoints would do.
//   params.user:              presence member {user_id, user_info} (presence channels)
//   params.user_data:         sign-in user object, e.g. {id: "42", user_info: {...}}
//   params.bad_auth_channels: channels signed with a wrong secret
//   params.private_channel_data: channel data the auth handler also passes for private channels
//                                (one helper for private and presence, as many apps have)
//   params.auth_endpoint:     an HTTP auth endpoint (pusher-js's own ajax transport) instead
//   params.pusher_options:    more pusher-js options, e.g. {activityTimeout, pongTimeout}
export function pusherOptions(params) {
  const sdk = serverSdk(params);
  const badSdk = serverSdk(params, WRONG_SECRET);
  const badChannels = new Set(params.bad_auth_channels ?? []);
  const channelAuthorization = params.auth_endpoint
    ? { endpoint: params.auth_endpoint, transport: 'ajax' }
    : {
        customHandler: ({ socketId, channelName }, callback) => {
          const signer = badChannels.has(channelName) ? badSdk : sdk;
          try {
            const data = channelName.startsWith('presence-') ? params.user : params.private_channel_data;
            const auth = data === undefined
              ? signer.authorizeChannel(socketId, channelName)
              : signer.authorizeChannel(socketId, channelName, data);
            emit({ type: 'auth', channel: channelName, socket_id: socketId });
            callback(null, auth);
          } catch (error) {
            emit({ type: 'auth_failed', channel: channelName, error: String(error) });
            callback(error, null);
          }
        },
      };
  return {
    cluster: '',
    wsHost: params.ws_host ?? '127.0.0.1',
    wsPort: params.ws_port,
    wssPort: params.ws_port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization,
    userAuthentication: {
      customHandler: ({ socketId }, callback) => {
        try {
          const auth = sdk.authenticateUser(socketId, params.user_data);
          emit({ type: 'user_auth', socket_id: socketId });
          callback(null, auth);
        } catch (error) {
          emit({ type: 'user_auth_failed', error: String(error) });
          callback(error, null);
        }
      },
    },
    ...(params.pusher_options ?? {}),
  };
}

// Plain JSON for an error object pusher-js emits (Error instances do not stringify).
export function plain(value) {
  if (value instanceof Error) {
    return { name: value.name, message: value.message };
  }
  try {
    return JSON.parse(JSON.stringify(value ?? null));
  } catch (error) {
    return String(value);
  }
}

// Reports every connection-level event of a pusher-js client: state changes, errors, and
// every frame received (as pusher-js decoded it).
export function reportConnection(pusher) {
  const connection = pusher.connection;
  connection.bind('state_change', ({ previous, current }) => {
    emit({ type: 'state', previous, current });
  });
  connection.bind('connected', () => {
    emit({ type: 'connected', socket_id: connection.socket_id });
  });
  connection.bind('error', (error) => {
    emit({ type: 'error', error: plain(error) });
  });
  connection.bind('message', (message) => {
    emit({
      type: 'message',
      event: message.event,
      channel: message.channel ?? null,
      data: plain(message.data),
      user_id: message.user_id ?? null,
    });
  });
}

export function stateReport(pusher) {
  const connection = pusher.connection;
  return {
    type: 'state_report',
    state: connection.state,
    socket_id: connection.socket_id ?? null,
    // pusher-js keeps a retry timer while it plans to reconnect; none after a refusal (4001-4099).
    retry_scheduled: Boolean(connection.retryTimer),
  };
}
