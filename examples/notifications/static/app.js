// Notification feed page: log in for a JWT, subscribe to private-user.<id> with pusher-js
// (authorised by this backend's /broadcasting/auth with the JWT as a bearer header), and keep
// the latest 20 and the unread badge right, also across a lost connection.
"use strict";

const LATEST = 20;
const state = { token: null, user: null, pusher: null, notifications: new Map(), unread: 0, buffered: null };
const $ = (selector) => document.querySelector(selector);

const api = (method, path, body) => callApi(state.token, method, path, body);

// The backend's view replaces ours: events missed while disconnected are in it. Events that
// arrive while the request is in flight are replayed on top, in order, so none is lost and the
// last unread count wins.
async function refetch() {
  state.buffered = [];
  try {
    const { notifications, unread_count } = await api("GET", "/api/notifications");
    state.notifications = new Map(notifications.map((n) => [n.id, n]));
    state.unread = unread_count;
    for (const [handler, data] of state.buffered) handler(data);
  } finally {
    state.buffered = null;
  }
  render();
}

// Apply an event now, and again after a refetch that is in flight.
function onEvent(handler) {
  return (data) => {
    if (state.buffered) state.buffered.push([handler, data]);
    handler(data);
    render();
  };
}

function render() {
  const badge = $("#badge");
  badge.textContent = String(state.unread);
  badge.classList.toggle("zero", state.unread === 0);
  const list = $("#notifications");
  list.replaceChildren();
  const newestFirst = [...state.notifications.values()].sort((a, b) => b.id - a.id).slice(0, LATEST);
  for (const n of newestFirst) {
    const item = document.createElement("li");
    item.dataset.id = String(n.id);
    item.className = `${n.kind}${n.read ? "" : " unread"}`;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = n.title;
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = n.body;
    item.append(title, body);
    if (!n.read) {
      const read = document.createElement("button");
      read.textContent = "Mark read";
      read.className = "mark-read";
      read.addEventListener("click", () => api("POST", `/api/notifications/${n.id}/read`));
      item.append(read);
    }
    list.append(item);
  }
}

async function connect() {
  const { pusher } = await connectPusher(state.token);
  state.pusher = pusher;
  const channel = pusher.subscribe(`private-user.${state.user.id}`);
  // pusher-js subscribes again after every reconnect ('connected' once more) and fires this each
  // time; refetching here rather than on 'connected' also covers events published between the
  // new connection and its subscription.
  channel.bind("pusher:subscription_succeeded", () => refetch().catch(console.error));
  channel.bind(
    "notification.created",
    onEvent((n) => state.notifications.set(n.id, n)),
  );
  channel.bind(
    "notification.read",
    onEvent(({ id }) => {
      const n = state.notifications.get(id);
      if (n) n.read = true;
    }),
  );
  channel.bind(
    "unread_count.updated",
    onEvent(({ unread_count }) => {
      state.unread = unread_count;
    }),
  );
}

async function start(token, user) {
  state.token = token;
  state.user = user;
  sessionStorage.setItem("session", JSON.stringify({ token, user }));
  $("#login").hidden = true;
  $("#feed").hidden = false;
  $("#maintenance").hidden = !user.is_admin;
  $("#who").textContent = user.name;
  const { users } = await api("GET", "/api/users");
  const select = $("#send select");
  select.replaceChildren(
    ...users.map((u) => {
      const option = document.createElement("option");
      option.value = String(u.id);
      option.textContent = u.name;
      return option;
    }),
  );
  await connect();
}

bindLoginForm(({ token, user }) => start(token, user));

$("#send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  await api("POST", "/api/notifications", { user_id: Number(form.get("user_id")), title: form.get("title") });
  event.target.reset();
});

$("#maintenance").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  await api("POST", "/api/maintenance", { message: form.get("message") });
  event.target.reset();
});

$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("session");
  location.reload();
});

const saved = sessionStorage.getItem("session");
if (saved) {
  const { token, user } = JSON.parse(saved);
  start(token, user).catch(() => sessionStorage.removeItem("session"));
}
