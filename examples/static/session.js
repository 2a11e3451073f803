// Shared by the notification and incident pages: the login form, JSON calls with the login's
// JWT, and a pusher-js client authorised by the backend's /broadcasting/auth with that JWT as a
// bearer header (pusher-js sends channelAuthorization.headers with each auth request).
"use strict";

// Wires form#login: POST /login, then onLoggedIn({ token, user }); errors go to #login-error.
function bindLoginForm(onLoggedIn) {
  const form = document.querySelector("#login");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const response = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: fields.get("name"), password: fields.get("password") }),
    });
    const json = await response.json();
    if (!response.ok) {
      document.querySelector("#login-error").textContent = json.error;
      return;
    }
    form.hidden = true;
    await onLoggedIn(json);
  });
}

async function callApi(token, method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error(json.error || response.statusText);
  return json;
}

// A pusher-js client for relay as the backend's /config describes it; #state shows its state.
async function connectPusher(token) {
  const config = await (await fetch("/config")).json();
  const pusher = new Pusher(config.key, {
    cluster: "",
    wsHost: config.wsHost,
    wsPort: config.wsPort,
    forceTLS: false,
    enabledTransports: ["ws"],
    channelAuthorization: {
      endpoint: "/broadcasting/auth",
      transport: "ajax",
      headers: { Authorization: `Bearer ${token}` },
    },
  });
  pusher.connection.bind("state_change", ({ current }) => {
    const element = document.querySelector("#state");
    element.textContent = current;
    element.className = `state ${current}`;
  });
  return { pusher, config };
}
