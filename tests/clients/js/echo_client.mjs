// A real Laravel Echo 2 client (broadcaster 'reverb', i.e. the Pusher connector with
// cluster '') over pusher-js, reporting what its callbacks receive as JSON lines.
//
// Params (argv[2], JSON): as pusher_client.mjs; `user` is the presence member
// {user_id, user_info} the auth handler signs, as Laravel's /broadcasting/auth would.
//
// Commands (stdin, JSON lines). `kind` is "public" (Echo.channel), "private" (Echo.private)
// or "presence" (Echo.join); `name` is the Echo name (no prefix):
//   {"op":"subscribe","kind":K,"name":N,"listen":[E...],"whispers":[W...]}
//       -> "subscribed" / "subscription_error"; "listen" lines per event; "whisper" lines;
//          presence: "here", "joining", "leaving"
//   {"op":"whisper","kind":K,"name":N,"event":W,"data":D}   -> "whispered"
//   {"op":"leave","name":N}
//   {"op":"state"} -> "state_report";  {"op":"disconnect"} / {"op":"exit"}

import Echo from 'laravel-echo';
import Pusher from 'pusher-js';
import {
  emit,
  installExitGuards,
  onCommands,
  plain,
  pusherOptions,
  readParams,
  reportConnection,
  stateReport,
} from './lib.mjs';

const params = readParams();
installExitGuards(params);

const echo = new Echo({
  broadcaster: 'reverb',
  key: params.key,
  Pusher,
  ...pusherOptions(params),
});
const pusher = echo.connector.pusher;
reportConnection(pusher);

function channelFor(kind, name) {
  switch (kind) {
    case 'public':
      return echo.channel(name);
    case 'private':
      return echo.private(name);
    case 'presence':
      return echo.join(name);
    default:
      throw new Error(`unknown channel kind ${kind}`);
  }
}

function subscribe({ kind, name, listen = [], whispers = [] }) {
  const channel = channelFor(kind, name);
  channel
    .subscribed(() => emit({ type: 'subscribed', kind, name }))
    .error((error) => emit({ type: 'subscription_error', kind, name, error: plain(error) }));
  for (const event of listen) {
    channel.listen(event, (data) => emit({ type: 'listen', kind, name, event, data: plain(data) }));
  }
  for (const event of whispers) {
    channel.listenForWhisper(event, (data) => emit({ type: 'whisper', kind, name, event, data: plain(data) }));
  }
  if (kind === 'presence') {
    channel
      .here((members) => emit({ type: 'here', name, members: plain(members) }))
      .joining((member) => emit({ type: 'joining', name, member: plain(member) }))
      .leaving((member) => emit({ type: 'leaving', name, member: plain(member) }));
  }
}

onCommands((command) => {
  switch (command.op) {
    case 'subscribe':
      subscribe(command);
      break;
    case 'whisper':
      channelFor(command.kind, command.name).whisper(command.event, command.data);
      emit({ type: 'whispered', name: command.name, event: command.event });
      break;
    case 'leave':
      echo.leave(command.name);
      break;
    case 'state':
      emit(stateReport(pusher));
      break;
    case 'disconnect':
      echo.disconnect();
      break;
    default:
      emit({ type: 'unknown_command', op: command.op });
  }
});
