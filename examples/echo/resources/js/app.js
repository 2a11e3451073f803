// The page's script, as a Laravel app's resources/js/app.js would use window.Echo: a public
// channel, a private channel per tenant, and a presence room with whisper.
import './echo.js';

const $ = (selector) => document.querySelector(selector);

function append(list, text) {
    const item = document.createElement('li');
    item.textContent = text;
    $(list).prepend(item);
}

function post(path, body = {}) {
    return fetch(path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
    });
}

window.Echo.connector.pusher.connection.bind('state_change', ({ current }) => {
    $('#state').textContent = current;
    $('#state').className = `state ${current}`;
});

const me = await fetch('/api/me');
if (me.ok) {
    const { user } = await me.json();
    start(user);
} else {
    $('#login').hidden = false;
}

$('#login').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const response = await post('/login', { name: form.get('name'), password: form.get('password') });
    if (response.ok) {
        location.reload(); // like a Laravel login redirect: the session cookie is set now
    } else {
        $('#login-error').textContent = (await response.json()).error;
    }
});

function start(user) {
    $('#who').textContent = `${user.name} · tenant ${user.tenant_id}`;
    $('#app').hidden = false;
    $('#tenant-channel').textContent = `private-commerce.${user.tenant_id}`;

    // Public channel; Echo prefixes the App.Events namespace: App\Events\OrderShipped.
    window.Echo.channel('orders').listen('OrderShipped', (e) => {
        append('#orders', `Order #${e.order.id} shipped to ${e.order.city}`);
    });

    // private-commerce.<tenant>; the leading dot means "no namespace": the event is notification.created.
    window.Echo.private(`commerce.${user.tenant_id}`)
        .listen('.notification.created', (e) => append('#notifications', e.message))
        .error((error) => append('#notifications', `not authorised: ${JSON.stringify(error)}`));

    const members = new Map();
    const showMembers = () => {
        $('#members').replaceChildren(
            ...[...members.values()].sort().map((name) => {
                const item = document.createElement('li');
                item.textContent = name;
                return item;
            }),
        );
    };
    let typingTimer;
    const room = window.Echo.join('room.1')
        .here((users) => {
            members.clear();
            for (const u of users) members.set(u.id, u.name);
            showMembers();
            append('#room-log', `here: ${users.map((u) => u.name).sort().join(', ')}`);
        })
        .joining((u) => {
            members.set(u.id, u.name);
            showMembers();
            append('#room-log', `${u.name} joined`);
        })
        .leaving((u) => {
            members.delete(u.id);
            showMembers();
            append('#room-log', `${u.name} left`);
        })
        .listenForWhisper('typing', (e) => {
            $('#typing').textContent = `${e.name} is typing…`;
            clearTimeout(typingTimer);
            typingTimer = setTimeout(() => ($('#typing').textContent = ''), 3000);
        });

    $('#message').addEventListener('input', () => room.whisper('typing', { name: user.name }));
    $('#ship').addEventListener('click', () => post('/demo/orders/ship'));
    $('#notify').addEventListener('click', () => post('/demo/notify'));
}
