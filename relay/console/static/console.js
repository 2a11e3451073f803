// relay console: one server-sent event stream per app ("log" lines, "status" once a second), plain DOM.
'use strict';

const base = document.body.dataset.base;
const MAX_LINES = 2000;
const $ = (id) => document.getElementById(id);
const appSelect = $('app');
const logBody = document.querySelector('#log tbody');
const channelsBody = document.querySelector('#channels tbody');
const filterChannel = $('filter-channel');
const filterEvent = $('filter-event');
const pauseButton = $('pause');
let lines = [];
let stream = null;
let paused = false;

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function matches(line) {
  const channel = filterChannel.value.trim().toLowerCase();
  const event = filterEvent.value.trim().toLowerCase();
  return (!channel || line.channel.toLowerCase().includes(channel))
    && (!event || line.event.toLowerCase().includes(event));
}

function rowFor(line) {
  const row = document.createElement('tr');
  row.className = `kind-${line.kind}`;
  cell(row, new Date(line.time * 1000).toLocaleTimeString([], { hour12: false }) + '.' +
    String(Math.floor((line.time % 1) * 1000)).padStart(3, '0'));
  cell(row, line.kind.replace('_', ' '), 'kind');
  cell(row, line.channel, 'channel');
  cell(row, line.event, 'event');
  cell(row, line.socket_id, 'socket');
  cell(row, line.detail, 'detail');
  cell(row, line.data, 'data');
  cell(row, line.node, 'node');
  return row;
}

function render() {
  const shown = lines.filter(matches);
  logBody.replaceChildren(...shown.slice().reverse().map(rowFor));
  $('shown').textContent = `${shown.length} of ${lines.length} lines`;
}

function addLines(batch) {
  lines.push(...batch);
  if (lines.length > MAX_LINES) lines = lines.slice(lines.length - MAX_LINES);
  if (paused) return;
  const fresh = batch.filter(matches);
  for (const line of fresh) logBody.insertBefore(rowFor(line), logBody.firstChild);
  while (logBody.children.length > MAX_LINES) logBody.removeChild(logBody.lastChild);
  $('shown').textContent = `${logBody.children.length} of ${lines.length} lines`;
}

function showStatus(status) {
  const figures = status.figures || {};
  for (const name of ['connections', 'channels', 'messages_in_per_s', 'messages_out_per_s',
    'api_events_per_s', 'client_events_per_s', 'nodes']) {
    const value = figures[name];
    $(`fig-${name}`).textContent = value === undefined ? '–' : String(value);
  }
  $('fig-webhooks').textContent = `${figures.webhooks_queued ?? 0} queued, ${figures.webhooks_backlog ?? 0} in store`;
  const dropped = $('dropped');
  if (status.dropped > 0) {
    dropped.hidden = false;
    dropped.textContent = `Not seeing everything: ${status.dropped} log lines dropped (too much traffic to show)`;
  } else {
    dropped.hidden = true;
  }
  const channelsError = $('channels-error');
  channelsError.hidden = !status.channels_error;
  channelsError.textContent = status.channels_error || '';
  if (status.channels) showChannels(status.channels);
}

function showChannels(channels) {
  const rows = channels.map((channel) => {
    const row = document.createElement('tr');
    const name = document.createElement('td');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'channel';
    button.textContent = channel.name;
    button.title = 'Show this channel only';
    button.addEventListener('click', () => {
      filterChannel.value = channel.name;
      $('send-channel').value = channel.name;
      render();
    });
    name.appendChild(button);
    if (channel.members) {
      const members = document.createElement('div');
      members.className = 'members';
      members.textContent = `${channel.user_count} member${channel.user_count === 1 ? '' : 's'}: ${channel.members.join(', ')}`;
      name.appendChild(members);
    }
    row.appendChild(name);
    cell(row, String(channel.subscription_count));
    return row;
  });
  channelsBody.replaceChildren(...rows);
  $('channels-empty').hidden = channels.length > 0;
}

function connect() {
  if (stream) stream.close();
  lines = [];
  render();
  const app = appSelect.value;
  history.replaceState(null, '', `#${encodeURIComponent(app)}`);
  stream = new EventSource(`${base}/stream?app_id=${encodeURIComponent(app)}`);
  const live = $('live');
  stream.addEventListener('open', () => { live.textContent = `live: app ${app}`; live.classList.add('on'); });
  stream.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.classList.remove('on'); });
  stream.addEventListener('log', (message) => addLines(JSON.parse(message.data)));
  stream.addEventListener('status', (message) => showStatus(JSON.parse(message.data)));
}

async function loadApps() {
  const response = await fetch(`${base}/apps`, { credentials: 'same-origin' });
  if (!response.ok) {
    $('live').textContent = `cannot list apps (${response.status})`;
    return;
  }
  const { apps } = await response.json();
  const wanted = decodeURIComponent(location.hash.slice(1));
  for (const app of apps) {
    const option = document.createElement('option');
    option.value = app.id;
    option.textContent = app.enabled ? app.id : `${app.id} (disabled)`;
    option.selected = app.id === wanted;
    appSelect.appendChild(option);
  }
  connect();
}

$('send').addEventListener('submit', async (submit) => {
  submit.preventDefault();
  const result = $('send-result');
  result.className = '';
  result.textContent = 'sending…';
  const body = {
    app_id: appSelect.value,
    channel: $('send-channel').value.trim(),
    event: $('send-event').value.trim(),
    data: $('send-data').value,
  };
  try {
    const response = await fetch(`${base}/events`, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    result.className = response.ok ? '' : 'bad';
    result.textContent = response.ok ? `sent to ${body.channel}` : `refused: ${answer.error}`;
  } catch (error) {
    result.className = 'bad';
    result.textContent = `failed: ${error}`;
  }
});

appSelect.addEventListener('change', connect);
filterChannel.addEventListener('input', render);
filterEvent.addEventListener('input', render);
$('filters').addEventListener('submit', (submit) => submit.preventDefault());
pauseButton.addEventListener('click', () => {
  paused = !paused;
  pauseButton.setAttribute('aria-pressed', String(paused));
  pauseButton.textContent = paused ? 'Resume' : 'Pause';
  if (!paused) render();
});
$('clear').addEventListener('click', () => { lines = []; render(); });

loadApps();
