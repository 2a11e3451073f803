// Publishes through relay's HTTP API with the official Node server SDK (`pusher` 5), then exits.
// With encryption_master_key_base64 set, the SDK encrypts events for private-encrypted- channels.
//
// Params (argv[2], JSON): app_id, key, secret, ws_host, http_port, encryption_master_key_base64?,
//   and either {"channel", "event", "data"} (trigger) or {"user_id", "event", "data"} (sendToUser),
//   or {"channel", "event", "body_size"}: a raw POST /events whose data is that many bytes (the SDK's
//   trigger refuses large data before sending; its post() does not).
// Prints one line: {"type":"response","status":N,"body":...} or {"type":"request_failed",...}.

import { emit, installExitGuards, readParams, serverSdk } from './lib.mjs';

const params = readParams();
installExitGuards(params);
const sdk = serverSdk(params);

try {
  let response;
  if (params.body_size !== undefined) {
    const body = { name: params.event, channels: [params.channel], data: 'a'.repeat(params.body_size) };
    response = await sdk.post({ path: '/events', body });
  } else if (params.user_id !== undefined) {
    response = await sdk.sendToUser(String(params.user_id), params.event, params.data);
  } else {
    response = await sdk.trigger(params.channel, params.event, params.data);
  }
  emit({ type: 'response', status: response.status, body: await response.text() });
  process.exit(0);
} catch (error) {
  // The SDK rejects with a RequestError carrying the HTTP status and body on non-2xx answers.
  emit({
    type: 'request_failed',
    error: String(error),
    status: error.status ?? null,
    body: error.body ?? null,
  });
  process.exit(1);
}
