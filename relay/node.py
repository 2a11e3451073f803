"""Node: carries out session actions against the registry, the adapter and webhooks.

It owns the socket_id → Connection map and is the only place where these parts meet. Fan-out
encodes a WebSocket frame once per event and hands the same bytes to every local subscriber
without awaiting.

Over 400 lines on purpose: joins, leaves, fan-out and disconnects share the registry, the users map and
the held leaves of a drain, and the hot paths (deliver, receive_nowait) stay one attribute lookup away
from them. What only reads the node (its gauges, relay.node_gauges) and what it needs of the parts
around it (relay.node_seams) live beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Coroutine, Iterable, Mapping
from typing import Any

import orjson

from relay import wsframe
from relay.adapters.base import (
    Adapter,
    CachedEvent,
    Envelope,
    EnvelopeKind,
    HistoryStore,
    LocalSnapshot,
    LocalSubscription,
)
from relay.admission import ConnectionAdmission
from relay.alerts import AlertKind
from relay.apps import AppDirectory
from relay.config import AppConfig
from relay.eager import run_now
from relay.fanout import SlicedFanout
from relay.metrics import Metrics
from relay.node_gauges import register_node_gauges
from relay.node_seams import ConnectHook, Connection, NoWebhooks, WebhookSink, session_settings
from relay.presence_view import MEMBER_FRAME, PresenceViews
from relay.protocol import errors, messages, webhook_events
from relay.protocol.actions import (
    Action,
    Close,
    Join,
    Leave,
    PublishClientEvent,
    Send,
    SignedIn,
)
from relay.protocol.channels import is_cache, is_presence
from relay.protocol.ids import AppId, SocketId
from relay.protocol.session import Session, SessionSettings
from relay.protocol.webhook_events import WebhookEventName
from relay.recovery import Recovery, StreamRecovery, position_of
from relay.registry import ChannelRegistry
from relay.signing import AppVerifier

logger = logging.getLogger(__name__)

SHUTDOWN_CODE = errors.RECONNECT_IMMEDIATELY  # like soketi: clients reconnect, to another node
# The actions that need cluster state (a tuple: `Join | Leave` would build a union type on every frame).
_CLUSTER_ACTIONS = (Join, Leave)


class Node:
    def __init__(
        self,
        apps: AppDirectory,
        adapter: Adapter,
        metrics: Metrics | None = None,
        webhooks: WebhookSink | None = None,
        connect_hook: ConnectHook | None = None,
        admission: ConnectionAdmission | None = None,
    ) -> None:
        self.apps = apps
        # Connection rates per node and per client address (relay.admission); unlimited by default.
        self.admission = admission or ConnectionAdmission(0, 0)
        self.adapter = adapter
        self.metrics = metrics or Metrics()
        self.webhooks: WebhookSink = webhooks or NoWebhooks()
        self.connect_hook = connect_hook
        self.connections: dict[str, Connection] = {}
        self.registry: ChannelRegistry[Connection] = ChannelRegistry()
        self.presence = PresenceViews()  # what local clients were told of each presence channel's members
        # (app_id, user_id) -> socket ids signed in as that user on this node
        self.users: dict[tuple[str, str], set[str]] = {}
        self._verifiers: dict[str, AppVerifier] = {}
        self._settings: dict[str, SessionSettings] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.accepting = True
        self.draining = False  # closing connections before a stop
        # While draining: seconds a closed connection's presence memberships are kept before they leave,
        # so the same user back on another node meanwhile is no member_removed/member_added flap.
        self.presence_hold = 0.0
        self._held_leaves: set[asyncio.Task[None]] = set()
        # Missed-message recovery, docs/recovery.md: cluster-wide when the adapter keeps histories (Redis).
        self.recovery = (
            StreamRecovery(adapter)
            if isinstance(adapter, HistoryStore) and adapter.shares_histories
            else Recovery(self._recovery_released)
        )
        # Big channels' events go out a slice per loop iteration (relay.fanout).
        self.fanout = SlicedFanout(self._written)
        # With the in-memory adapter nothing here suspends: opens, joins and leaves run without a task.
        # An adapter written before this attribute existed is taken to suspend: it runs in tasks.
        self.synchronous: bool = getattr(adapter, "completes_synchronously", False)
        self._show_apps()
        register_node_gauges(self.metrics, self)
        self.recovery.register_metrics(self.metrics)

    # Life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.adapter.start(self)
        self._sweeper = asyncio.create_task(self._sweep(), name="relay-session-sweeper")

    def close_connections(self) -> None:
        """Close every connection with 4200: clients reconnect at once, to another node."""
        self.accepting = False
        for connection in list(self.connections.values()):
            connection.send(errors.encode_error(SHUTDOWN_CODE, "Server is shutting down"))
            connection.close(SHUTDOWN_CODE, "Server is shutting down")

    async def stop(self) -> None:
        self.close_connections()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.adapter.close()

    async def _sweep(self) -> None:
        """Keep-alive and sign-in deadlines: tick every session once a second."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for connection in list(self.connections.values()):
                try:
                    actions = connection.session.tick(now)
                    if actions:
                        self.recovery.ticked(connection, actions)
                        self._execute_now(connection, actions)
                except Exception:
                    logger.exception("session tick failed for socket_id=%s", connection.socket_id)
            self.recovery.sweep()

    def new_session(self, socket_id: str, app: AppConfig, now: float) -> Session:
        settings, verifier = self._session_parts(app)
        return Session(socket_id, settings, verifier, now)

    def _session_parts(self, app: AppConfig) -> tuple[SessionSettings, AppVerifier]:
        verifier = self._verifiers.get(app.id)
        if verifier is None:
            verifier = self._verifiers[app.id] = AppVerifier(app.key, app.secret)
            self._settings[app.id] = session_settings(app)
        return self._settings[app.id], verifier

    def reload_apps(self, apps: Iterable[AppConfig]) -> None:
        """A new apps configuration (SIGHUP), without dropping connections: open connections take the new
        settings and secret; those of a removed or disabled app are closed with the protocol's code."""
        self.apps.replace(apps)
        self._verifiers.clear()
        self._settings.clear()
        self._show_apps()
        for connection in list(self.connections.values()):
            reloaded = self.apps.by_id(connection.app.id)
            if reloaded is None or not reloaded.enabled:
                code = errors.APP_DOES_NOT_EXIST if reloaded is None else errors.APP_DISABLED
                message = "Application does not exist" if reloaded is None else "Application is disabled"
                connection.send(errors.encode_error(code, message))
                connection.close(code, message)
                continue
            connection.app = reloaded
            connection.session.reconfigure(*self._session_parts(reloaded))

    def _show_apps(self) -> None:
        """Every configured app's counters exist from the first scrape on, at zero."""
        for app in self.apps:
            self.metrics.app(app.id)

    # Connections ---------------------------------------------------------------------------------

    def opens_now(self, app: AppConfig, query: str) -> bool:
        """Whether open() completes without suspending: the in-memory adapter, and no token to verify (that
        may need the app's JWKS fetched). A transport may then run it on the spot (relay.eager)."""
        hook = self.connect_hook
        return self.synchronous and not (query and hook is not None and hook.may_wait(app, query))

    async def open(self, connection: Connection, query: str = "") -> bool:
        """Count the connection against the app's quota and greet it; False when refused (4100, or 4009 for a
        bad token). `query` is the WebSocket URL's raw query string, for the connect hook."""
        app = connection.app
        socket_id = SocketId(connection.socket_id)  # transports keep it as a plain str
        hook = self.connect_hook
        user = await hook.user(app, socket_id, query) if query and hook is not None else None
        if isinstance(user, errors.PusherError):
            assert user.code is not None
            self.metrics.app(app.id).refused("token")
            connection.send(errors.encode_error(user.code, user.message))
            connection.close(user.code, user.message)
            return False
        count = await self.adapter.add_connection(app.id, socket_id)
        if app.max_connections and count > app.max_connections:
            await self.adapter.remove_connection(app.id, socket_id)
            self.metrics.app(app.id).refused("over_quota")
            logger.warning(
                "connection refused: app at its connection cap (%d)",
                app.max_connections,
                extra={"app_id": app.id, "code": errors.OVER_CAPACITY, "reason": "over_quota"},
            )
            self.metrics.alerts.raise_alert(
                AlertKind.APP_AT_CONNECTION_CAP,
                f"app {app.id} is at its connection cap ({app.max_connections}); new connections are refused",
            )
            message = "The application is over its connection quota"
            connection.send(errors.encode_error(errors.OVER_CAPACITY, message))
            connection.close(errors.OVER_CAPACITY, message)
            return False
        self.connections[connection.socket_id] = connection
        self.metrics.app(app.id).connections_opened += 1
        if self.metrics.tap.active:
            self.metrics.tap.connected(app.id, connection.socket_id)
        connection.send(messages.connection_established(connection.socket_id, app.activity_timeout))
        if user is not None:
            await self._execute(connection, connection.session.sign_in(user.user_id, user.user_info))
        return True

    async def receive(self, connection: Connection, raw: bytes | str) -> None:
        pending = self.receive_nowait(connection, raw)
        if pending is not None:
            await pending

    def receive_nowait(self, connection: Connection, raw: bytes | str) -> Coroutine[Any, Any, None] | None:
        """Handle one frame; returns a coroutine only when it needs cluster state (subscribe, unsubscribe)
        from an adapter that may suspend (with the in-memory one, those run here too, relay.eager).

        Pings, client events and refusals complete here without a task, so a transport can keep
        reading; it must await a returned coroutine before handing this connection its next frame.
        """
        traffic = self.metrics.app(connection.app.id)
        traffic.messages_in += 1
        traffic.bytes_in += len(raw)
        self.recovery.received(connection, raw)
        actions = connection.session.receive(raw, self._loop_time())
        if not actions:
            return None
        if not any(isinstance(action, _CLUSTER_ACTIONS) for action in actions):
            self._execute_now(connection, actions)
            return None
        executing = self._execute(connection, actions)
        return run_now(executing) if self.synchronous else executing

    def _loop_time(self) -> float:
        # The loop is kept: asyncio.get_running_loop() makes a getpid system call each time (Python 3.11).
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    async def disconnect(self, connection: Connection) -> None:
        """Undo everything the connection held: subscriptions, presence, sign-in, quota."""
        socket_id = SocketId(connection.socket_id)  # transports keep it as a plain str
        if self.connections.pop(socket_id, None) is None:
            return
        session = connection.session
        app = connection.app
        self.metrics.app(app.id).closed(connection.close_code)
        self.recovery.disconnected(connection)
        if self.metrics.tap.active:
            self.metrics.tap.disconnected(app.id, socket_id, connection.close_code)
        for leave in session.close():
            if self.presence_hold > 0 and leave.user_id is not None and is_presence(leave.channel):
                self._hold_leave(connection, leave)
                continue
            try:
                await self._leave(connection, leave)
            except Exception:
                logger.exception("leaving %s failed for socket_id=%s", leave.channel, socket_id)
        if session.user_id is not None:
            key = (app.id, session.user_id)
            sockets = self.users.get(key)
            if sockets is not None:
                sockets.discard(socket_id)
                if not sockets:
                    del self.users[key]
        await self.adapter.remove_connection(app.id, socket_id)

    def _hold_leave(self, connection: Connection, leave: Leave) -> None:
        task = asyncio.get_running_loop().create_task(self._leave_later(connection, leave, self.presence_hold))
        self._held_leaves.add(task)
        task.add_done_callback(self._held_leaves.discard)

    async def _leave_later(self, connection: Connection, leave: Leave, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._leave(connection, leave)
        except Exception:
            logger.exception("leaving %s failed for socket_id=%s", leave.channel, connection.socket_id)

    async def release_held_leaves(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the presence leaves held back by a drain."""
        if self._held_leaves:
            await asyncio.wait(set(self._held_leaves), timeout=timeout)

    # Actions -------------------------------------------------------------------------------------

    async def _execute(self, connection: Connection, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Join):
                await self._join(connection, action)
            elif isinstance(action, Leave):
                await self._leave(connection, action)
            else:
                self._execute_now(connection, (action,))

    def _execute_now(self, connection: Connection, actions: Iterable[Action]) -> None:
        """Actions that need no cluster state."""
        for action in actions:
            match action:
                case Send():
                    connection.send(action.frame)
                    if self.metrics.tap.active:
                        self.metrics.tap.sent(connection.app.id, connection.socket_id, action.frame)
                case Close():
                    connection.close(action.code, action.reason)
                case PublishClientEvent():
                    self._client_event(connection, action)
                case SignedIn():
                    self._signed_in(connection, action)
                case Join() | Leave():
                    raise AssertionError("Join and Leave need _execute")

    async def _join(self, connection: Connection, join: Join) -> None:
        """Cluster state first, then subscription_succeeded: once a client hears it is subscribed, an event
        published on any node reaches it (this node's Redis SUBSCRIBE is written before add_subscription's
        reply can be read). The socket enters the registry only right before the success frame, with no
        await in between, so no channel event or member change can precede that frame or the cached event."""
        app = connection.app
        channel = join.channel
        socket_id = SocketId(connection.socket_id)  # transports keep it as a plain str
        member = join.member
        already = self.registry.contains(app.id, channel, socket_id)
        first_for_user = False
        if not already:
            if member is not None:
                current = await self.adapter.members(app.id, channel)
                if member.user_id not in current and len(current) >= app.max_presence_members:
                    connection.session.join_refused(channel)
                    limit = f"Presence channel is full ({app.max_presence_members} members)"
                    frame = messages.subscription_error(channel, "LimitReached", limit, errors.OVER_CAPACITY)
                    connection.send(frame)
                    if self.metrics.tap.active:
                        self.metrics.tap.sent(app.id, socket_id, frame)
                    return
            if not self.registry.subscribers(app.id, channel):
                self.adapter.channel_occupied_locally(app.id, channel)
            if member is not None:
                first_for_user = await self.adapter.add_member(
                    app.id, channel, socket_id, member.user_id, member.user_info
                )
            occupied = await self.adapter.add_subscription(app.id, channel, socket_id)
            if occupied and self.webhooks.wants(app, WebhookEventName.CHANNEL_OCCUPIED):  # no event built for nobody
                self.webhooks.notify(app, webhook_events.channel_occupied(channel))
            if self._counts_subscriptions(app, channel):
                await self._subscription_count_changed(app, channel)
        members = None if member is None else await self.adapter.members(app.id, channel)
        cached = await self.adapter.get_cache(app.id, channel) if join.channel_type.is_cache else None
        # Again: the channel may have been vacated here (its last local subscriber left) while we awaited.
        if not already and self.registry.add(app.id, channel, socket_id, connection):
            self.adapter.channel_occupied_locally(app.id, channel)
            if members is not None:
                self.presence.start(app.id, channel, members)
        if members is None:
            connection.send(messages.subscription_succeeded(channel))
        else:
            connection.send(messages.presence_subscription_succeeded(channel, members))
        if not already:  # replays what a returning user missed, before any newer event
            replay = self.recovery.joined(connection, channel, member)
            if replay is not None:
                await replay
        if self.metrics.tap.active:
            self.metrics.tap.subscribed(app.id, socket_id, channel, None if member is None else member.user_id)
        if member is not None and first_for_user:
            frame = messages.member_added(channel, member.user_id, member.user_info)
            self.adapter.publish(Envelope(EnvelopeKind.EVENT, app.id, channel, frame, socket_id))
            self.webhooks.notify(app, webhook_events.member_added(channel, member.user_id))
        if join.channel_type.is_cache:
            self._send_cached(connection, channel, cached)

    def _send_cached(self, connection: Connection, channel: str, cached: CachedEvent | None) -> None:
        app = connection.app
        if cached is None:
            connection.send(messages.cache_miss(channel))
            self.webhooks.notify(app, webhook_events.cache_miss(channel))
        else:
            connection.send(messages.channel_event(cached.event, channel, cached.data))

    async def _leave(self, connection: Connection, leave: Leave) -> None:
        app = connection.app
        channel = leave.channel
        socket_id = SocketId(connection.socket_id)  # transports keep it as a plain str
        if not self.registry.contains(app.id, channel, socket_id):
            return
        self.recovery.left(connection, channel)
        # A channel with a recovery history stays subscribed across the cluster until its history goes.
        if self.registry.remove(app.id, channel, socket_id) and not self.recovery.holds(app.id, channel):
            self.adapter.channel_vacated_locally(app.id, channel)
            self.presence.drop(app.id, channel)
        if self.metrics.tap.active:
            self.metrics.tap.unsubscribed(app.id, socket_id, channel)
        if leave.user_id is not None and is_presence(channel):
            if await self.adapter.remove_member(app.id, channel, socket_id, leave.user_id):
                self.member_removed(app, channel, leave.user_id)
        if await self.adapter.remove_subscription(app.id, channel, socket_id):
            self.webhooks.notify(app, webhook_events.channel_vacated(channel))
        if self._counts_subscriptions(app, channel):
            await self._subscription_count_changed(app, channel)

    def _recovery_released(self, app_id: str, channel: str) -> None:
        if not self.registry.subscribers(app_id, channel):
            self.adapter.channel_vacated_locally(AppId(app_id), channel)

    def _counts_subscriptions(self, app: AppConfig, channel: str) -> bool:
        """The opt-in subscription_count webhook (docs/protocol.md §7): never for presence. Checked before
        _subscription_count_changed is called: a coroutine made for nothing costs every subscribe ~0.4 us."""
        return not is_presence(channel) and self.webhooks.wants(app, WebhookEventName.SUBSCRIPTION_COUNT)

    async def _subscription_count_changed(self, app: AppConfig, channel: str) -> None:
        """The subscription_count webhook's event, with the cluster-wide count (see _counts_subscriptions)."""
        count = await self.adapter.subscription_count(app.id, channel)
        self.webhooks.notify(app, webhook_events.subscription_count(channel, count))

    def member_removed(self, app: AppConfig, channel: str, user_id: str) -> None:
        frame = messages.member_removed(channel, user_id)
        self.adapter.publish(Envelope(EnvelopeKind.EVENT, app.id, channel, frame))
        self.webhooks.notify(app, webhook_events.member_removed(channel, user_id))

    def _client_event(self, connection: Connection, event: PublishClientEvent) -> None:
        app = connection.app
        self.metrics.app(app.id).client_events += 1
        if self.metrics.tap.active:
            self.metrics.tap.client_event(app.id, connection.socket_id, event.channel, event.event, event.data)
        envelope = Envelope(
            EnvelopeKind.EVENT,
            app.id,
            event.channel,
            event.frame,
            connection.socket_id,
            accepted_at=self._loop_time(),
            retention=self.recovery.retention(app, event.channel),
        )
        self.adapter.publish(envelope)
        data = event.data if isinstance(event.data, str) else orjson.dumps(event.data).decode()
        webhook = webhook_events.client_event(event.channel, event.event, data, connection.socket_id, event.user_id)
        self.webhooks.notify(app, webhook)

    def _signed_in(self, connection: Connection, signed_in: SignedIn) -> None:
        self.users.setdefault((connection.app.id, signed_in.user_id), set()).add(connection.socket_id)

    # Fan-out -------------------------------------------------------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        """ClusterListener: called for every envelope; must not block."""
        if envelope.kind is EnvelopeKind.EVENT:
            # Recorded even with nobody here: a returning subscriber may want it (docs/recovery.md).
            recovery = self.recovery
            frame = recovery.record(envelope) if recovery.active or envelope.event_id else envelope.frame
            subscribers = self.registry.subscribers(envelope.app_id, envelope.channel)
            if not subscribers:
                return
            if frame.startswith(MEMBER_FRAME) and not self.presence.admits(envelope.app_id, envelope.channel, frame):
                return  # a member change these clients heard already (announced again after an outage)
            wire = wsframe.text_frame(frame)
            if recovery.holding or recovery.fences:  # replays being read, or just written
                position = position_of(envelope.event_id) if envelope.event_id else 0
                subscribers = recovery.hold(envelope, position, wire, subscribers)
            skip = envelope.except_socket_id
            # Counted per event, never per frame: the hot loop below stays a bare loop.
            sent = len(subscribers) - (skip in subscribers)
            traffic = self.metrics.app(envelope.app_id)
            traffic.messages_out += sent
            traffic.bytes_out += sent * len(wire)
            channel = (envelope.app_id, envelope.channel)
            if self.fanout.takes(channel, len(subscribers)):
                self.fanout.send(channel, subscribers, wire, skip, envelope.accepted_at)
                return
            for socket_id, connection in subscribers.items():
                if socket_id != skip:
                    connection.send_wire(wire)
            if envelope.accepted_at:
                # call_soon runs after the write flush this fan-out scheduled, so this is accept to write.
                asyncio.get_running_loop().call_soon(self._written, envelope.accepted_at)
        elif envelope.kind is EnvelopeKind.TERMINATE_USER:
            self._terminate_local(envelope.app_id, envelope.user_id)

    def _written(self, accepted_at: float) -> None:
        self.metrics.publish_to_write.observe(self._loop_time() - accepted_at)

    def _terminate_local(self, app_id: str, user_id: str) -> None:
        message = "You got disconnected by the app"
        for socket_id in list(self.users.get((app_id, user_id), ())):
            connection = self.connections.get(socket_id)
            if connection is not None:
                connection.send(errors.encode_error(errors.CONNECTION_UNAUTHORIZED, message))
                connection.close(errors.CONNECTION_UNAUTHORIZED, message)

    def member_lost(self, app_id: str, channel: str, user_id: str) -> None:
        app = self.apps.by_id(app_id)
        if app is not None:
            self.member_removed(app, channel, user_id)

    def member_rejoined(self, member: LocalSubscription, removal_announced: bool) -> None:
        """This node wrote back a member the cluster had lost: announce it on every node, once (the nodes
        whose clients know it drop the frame). The member_added webhook only when the app was told the
        member left (a sweep); a member a restarted Redis forgot never left as far as the app knows."""
        app = self.apps.by_id(member.app_id)
        channel, user_id = member.channel, member.user_id
        # Gone since the write-back: its leave announces member_removed (or already did) if it was the last.
        if app is None or user_id is None or not self.registry.contains(app.id, channel, member.socket_id):
            return
        frame = messages.member_added(channel, user_id, member.user_info)
        self.adapter.publish(Envelope(EnvelopeKind.EVENT, app.id, channel, frame))
        if removal_announced:
            self.webhooks.notify(app, webhook_events.member_added(channel, user_id))

    def presence_channels(self) -> list[tuple[str, str]]:
        return self.presence.channels()

    def heal_members(
        self, app_id: str, channel: str, members: Mapping[str, Any], vanished: Collection[str]
    ) -> set[str]:
        """Tell this node's clients of `members` (the cluster's list) they do not know, and that the users
        in `vanished` left if the cluster still lacks them; returns every user they know and it lacks."""
        view = self.presence.members(app_id, channel)
        if view is None:
            return set()
        for user_id, user_info in members.items():
            if user_id not in view:
                frame = messages.member_added(channel, user_id, user_info)
                self.deliver(Envelope(EnvelopeKind.EVENT, app_id, channel, frame))
        missing = {user_id for user_id in view if user_id not in members}
        for user_id in missing.intersection(vanished):
            self.deliver(Envelope(EnvelopeKind.EVENT, app_id, channel, messages.member_removed(channel, user_id)))
        return missing

    def channel_lost(self, app_id: str, channel: str) -> None:
        app = self.apps.by_id(app_id)
        if app is not None:
            self.webhooks.notify(app, webhook_events.channel_vacated(channel))

    def local_snapshot(self) -> LocalSnapshot:
        counts: dict[str, int] = {}
        subscriptions: list[LocalSubscription] = []
        for connection in self.connections.values():
            counts[connection.app.id] = counts.get(connection.app.id, 0) + 1
        for app_id, channel, socket_id in self.registry.entries():
            subscriber = self.connections.get(socket_id)
            if subscriber is None:
                continue
            member = subscriber.session.member_on(channel)
            if member is None:
                subscriptions.append(LocalSubscription(app_id, channel, socket_id))
            else:
                subscriptions.append(LocalSubscription(app_id, channel, socket_id, member.user_id, member.user_info))
        return LocalSnapshot(counts, tuple(subscriptions))

    # HTTP API operations -------------------------------------------------------------------------

    async def publish(
        self, app: AppConfig, channels: Iterable[str], event: str, data: str, except_socket_id: str = ""
    ) -> None:
        """An HTTP API event: one frame per channel, encoded once, published once."""
        accepted_at = self._loop_time()
        for channel in channels:
            if self.metrics.tap.active:
                self.metrics.tap.api_event(app.id, channel, event, data, except_socket_id)
            frame = messages.channel_event(event, channel, data)
            if is_cache(channel):
                cached = CachedEvent(event, data, time.time() + app.cache_ttl)
                await self.adapter.set_cache(app.id, channel, cached)
            retention = self.recovery.retention(app, channel)
            envelope = Envelope(
                EnvelopeKind.EVENT,
                app.id,
                channel,
                frame,
                except_socket_id,
                accepted_at=accepted_at,
                retention=retention,
            )
            self.adapter.publish(envelope)
            self.metrics.app(app.id).api_events += 1

    def terminate_user(self, app: AppConfig, user_id: str) -> None:
        self.adapter.publish(Envelope(EnvelopeKind.TERMINATE_USER, app.id, user_id=user_id))
