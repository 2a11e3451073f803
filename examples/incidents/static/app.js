// Incident board page: log in for a JWT, join presence-duty with pusher-js (authorised by this
// backend's /broadcasting/auth with the JWT as a bearer header), show who is on duty, and raise
// incidents to everyone else on duty as `client-incident` client events.
"use strict";

const state = { token: null, user: null, channel: null, incidents: new Map() };
const $ = (selector) => document.querySelector(selector);

const api = (path) => callApi(state.token, "GET", path);

function renderMembers() {
  const list = $("#on-duty");
  list.replaceChildren();
  const members = [];
  state.channel.members.each((member) => members.push(member));
  members.sort((a, b) => a.info.name.localeCompare(b.info.name));
  for (const member of members) {
    const item = document.createElement("li");
    item.textContent = member.info.name;
    item.dataset.userId = member.id;
    if (member.id === state.channel.members.me.id) item.className = "me";
    list.append(item);
  }
}

function addIncident(incident, by) {
  if (!state.incidents.has(incident.id)) state.incidents.set(incident.id, { ...incident, by });
  renderIncidents();
}

function renderIncidents() {
  const list = $("#incidents");
  list.replaceChildren();
  const newestFirst = [...state.incidents.values()].sort((a, b) => b.at - a.at);
  for (const incident of newestFirst) {
    const item = document.createElement("li");
    item.className = incident.urgency;
    item.dataset.id = incident.id;
    const urgency = document.createElement("span");
    urgency.className = "urgency";
    urgency.textContent = incident.urgency;
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = `${incident.type} at ${incident.location}: ${incident.description}`;
    const by = document.createElement("span");
    by.className = "by";
    by.textContent = `raised by ${incident.by}`;
    item.append(urgency, what, by);
    list.append(item);
  }
}

// Incidents raised before this page connected (or while it was disconnected) come from the store.
async function loadStored() {
  const { incidents } = await api("/api/incidents");
  for (const incident of incidents) {
    const member = state.channel.members.get(incident.user_id);
    addIncident({ ...incident, at: incident.raised_at_ms }, member ? member.info.name : `user ${incident.user_id}`);
  }
}

async function connect() {
  const { pusher, config } = await connectPusher(state.token);
  const channel = pusher.subscribe(config.channel);
  state.channel = channel;
  channel.bind("pusher:subscription_succeeded", () => {
    renderMembers();
    loadStored().catch(console.error);
  });
  channel.bind("pusher:member_added", renderMembers);
  channel.bind("pusher:member_removed", renderMembers);
  // Client events carry the sender's user_id on presence channels (metadata, pusher-js 7.1+).
  channel.bind("client-incident", (incident, metadata) => {
    const member = metadata && channel.members.get(metadata.user_id);
    addIncident({ ...incident, at: Date.now() }, member ? member.info.name : "someone");
  });
}

$("#raise").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const incident = {
    // randomUUID needs a secure context (https or localhost); elsewhere a random string will do.
    id: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`,
    type: form.get("type"),
    location: form.get("location"),
    description: form.get("description"),
    urgency: form.get("urgency"),
  };
  // Client events are not echoed to their sender: show ours at once.
  if (state.channel.trigger("client-incident", incident)) {
    addIncident({ ...incident, at: Date.now() }, state.user.name);
    event.target.reset();
  }
});

bindLoginForm(async ({ token, user }) => {
  state.token = token;
  state.user = user;
  $("#board").hidden = false;
  $("#who").textContent = user.name;
  await connect();
});
