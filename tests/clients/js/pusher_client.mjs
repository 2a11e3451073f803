// A real pusher-js 8 client (Node build) that reports what it observes as JSON lines.
//
// Params (argv[2], JSON): ws_host, ws_port, app_id, key, secret, timeout_ms, and optionally
// user, user_data, bad_auth_channels (see lib.mjs), encryption_master_key_base64.
// The Node build of pusher-js is the with-encryption build (its webpack entry is
// pusher-with-encryption), so private-encrypted- channels work here; the package's
// `pusher-js/with-encryption` path is the browser build and needs a DOM.
//
// Commands (stdin, JSON lines):
//   {"op":"subscribe","channel":C}            -> "subscribed" / "subscription_error", then "event" lines
//   {"op":"unsubscribe","channel":C}
//   {"op":"trigger","channel":C,"event":E,"data":D}   client event -> "triggered" {ok}
//   {"op":"signin"}                            pusher.signin(); "user_event" lines for pusher.user
//   {"op":"state"}                             -> "state_report"
//   {"op":"disconnect"} / {"op":"exit"}

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

const pusher = new Pusher(params.key, pusherOptions(params));
reportConnection(pusher);

// Events sent to this user (server-to-user channel) are re-emitted on pusher.user.
pusher.user.bind_global((event, data) => {
  emit({ type: 'user_event', event, data: plain(data) });
});

function describeMembers(members) {
  return {
    count: members.count,
    my_id: members.myID ?? null,
    me: plain(members.me),
    members: plain(members.members),
  };
}

function subscribe(name) {
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', (data) => {
    const payload = channel.members ? describeMembers(channel.members) : plain(data);
    emit({ type: 'subscribed', channel: name, data: payload });
  });
  channel.bind('pusher:subscription_error', (error) => {
    emit({ type: 'subscription_error', channel: name, error: plain(error) });
  });
  channel.bind_global((event, data) => {
    if (event.startsWith('pusher:subscription_')) {
      return; // reported above
    }
    emit({ type: 'event', channel: name, event, data: plain(data) });
  });
}

onCommands((command) => {
  switch (command.op) {
    case 'subscribe':
      subscribe(command.channel);
      break;
    case 'unsubscribe':
      pusher.unsubscribe(command.channel);
      break;
    case 'trigger': {
      const channel = pusher.channel(command.channel);
      const ok = channel ? channel.trigger(command.event, command.data) : false;
      emit({ type: 'triggered', channel: command.channel, event: command.event, ok });
      break;
    }
    case 'signin':
      pusher.signin();
      break;
    case 'state':
      emit(stateReport(pusher));
      break;
    case 'disconnect':
      pusher.disconnect();
      break;
    default:
      emit({ type: 'unknown_command', op: command.op });
  }
});
