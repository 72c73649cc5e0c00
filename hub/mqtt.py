"""The hub's MQTT 5 connection (gmqtt): a persistent session, and PUBACK only after commit.

* ``clean_session=False`` with a session expiry > 0: the broker queues alarms while the hub is away.
* ``optimistic_acknowledgement=False``: gmqtt sends PUBACK with the reason code our ``async``
  handler returns, i.e. after the commit; if the handler raises, no PUBACK is sent.
* gmqtt logs payloads at DEBUG; ``hub.logs`` pins its logger to WARNING (no positions in logs).
* ``[broker] tls = true``: the hub connects to ``tls_port`` over TLS 1.2+, verifying the broker
  with ``ca_file`` (default: the broker's private CA), so its password never travels in clear.
* Retained messages are never replayed to the hub (MQTT 5 Retain Handling 2), except a device's
  ``status`` when the subscription is new (1); live messages arrive without the retain flag
  (Retain As Published off). A message that still comes flagged retained is a stored copy:
  ``on_retained`` handles it (the ingest refuses it outside ``status``).
* ``unacknowledged``: what the hub received and has not acknowledged yet, for ``/healthz``: a
  hub that stopped taking messages shows it as the age of the oldest one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from devicekit import protocol
from devicekit.signing import parse_key, sign
from devicekit.topics import subscription, topic
from devicekit.wristband import is_loopback
from hub.admission import RETAINED_CHANNEL
from hub.config import BrokerConfig, ConfigError
from hub.owntracks import SUBSCRIPTION as OWNTRACKS_SUBSCRIPTION

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[int]]
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


class Unacknowledged:
    """Messages received from the broker and not acknowledged yet, by topic and payload.

    A message whose handler raised (a database outage) stays until a delivery of the same bytes
    on the same topic is acknowledged (the broker re-sends it after a reconnect, a wristband
    re-sends the same bytes), or until the broker has no session for the hub any more.
    """

    #: Messages tracked at most; beyond it new ones are not (the oldest are the ones that count).
    LIMIT = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[bytes, float] = {}

    @staticmethod
    def key(topic_name: str, payload: bytes) -> bytes:
        return hashlib.sha256(topic_name.encode() + b"\0" + payload).digest()

    def received(self, key: bytes) -> None:
        if key not in self._since and len(self._since) < self.LIMIT:
            self._since[key] = self._clock()

    def acknowledged(self, key: bytes) -> None:
        self._since.pop(key, None)

    def forget(self) -> None:
        """The broker started a new session: it will deliver nothing of the old one again."""
        self._since.clear()

    def oldest_age_s(self) -> float | None:
        """Seconds since the oldest unacknowledged message arrived; None when there is none."""
        if not self._since:
            return None
        return self._clock() - min(self._since.values())

    def __len__(self) -> int:
        return len(self._since)


class HubConnection:
    def __init__(
        self, config: BrokerConfig, handler: Handler, on_retained: Handler | None = None
    ) -> None:
        self.config = config
        self._handler = handler
        self._on_retained = on_retained or handler
        self.unacknowledged = Unacknowledged()
        self.closing = False
        self._in_flight: set[asyncio.Task[object]] = set()
        self._redelivery: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.tls = broker_tls_context(config)
        self.client = gmqtt.Client(
            config.username,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=config.session_expiry_s,
        )
        self.client.set_auth_credentials(config.username, config.password.get_secret_value())
        self.client.set_config({"reconnect_retries": -1, "reconnect_delay": RECONNECT_MIN_S})
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    async def connect(self, retry_delay: float = 2.0) -> None:
        """Connect, retrying until the broker answers (the hub may start before the broker)."""
        while True:
            try:
                await self.client.connect(
                    self.config.host,
                    self.config.connect_port,
                    ssl=self.tls or False,
                    version=MQTTv50,
                    keepalive=self.config.keepalive_s,
                )
                return
            except (OSError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
                log.warning(
                    "broker %s:%s not available (%s); retrying in %g s",
                    self.config.host,
                    self.config.connect_port,
                    exc,
                    retry_delay,
                )
                await asyncio.sleep(retry_delay)

    async def disconnect(self, drain_timeout: float = 10.0) -> None:
        """Let messages being stored finish (so they get their PUBACK), then disconnect."""
        self.closing = True
        if self._redelivery is not None:
            self._redelivery.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=drain_timeout)
        await self.client.disconnect()

    def request_redelivery(self) -> None:
        """Reconnect after ``redelivery_delay_s``: MQTT 5 brokers re-send unacknowledged messages
        only on a new connection of the session, so this is how a failed store is retried."""
        if self._redelivery is None or self._redelivery.done():
            self._redelivery = asyncio.create_task(self._reconnect_later())

    async def _reconnect_later(self) -> None:
        await asyncio.sleep(self.config.redelivery_delay_s)
        if not self.closing:
            log.warning("reconnecting so that the broker re-sends what the hub could not store")
            await self.client.reconnect()

    def publish_ack(
        self, device_id: str, alarm_id: str, stage: protocol.AckStage, key: str | None
    ) -> bool:
        """Queue the ack, signed with the device's key, at QoS 1; False when the broker's Receive
        Maximum is reached (gmqtt raises then): the caller retries later, and the device's
        re-send gets a new ack. A device without a key (revoked) gets no ack: it could not
        check one, and nothing it sends is accepted anyway."""
        if key is None:
            log.warning("no ack for device %s: it has no key (revoked)", device_id)
            return True
        ack = protocol.HubAck(alarm_id=alarm_id, stage=stage, ts=protocol.utcnow())
        name = topic(device_id, "ack")
        try:
            self.client.publish(name, sign(parse_key(key), name, ack.to_payload()), qos=1)
        except OverflowError:
            log.warning("ack for device %s deferred: too many acks in flight", device_id)
            return False
        return True

    def _on_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        log.info(
            "connected to broker %s:%s%s (session present: %s)",
            self.config.host,
            self.config.connect_port,
            " over TLS" if self.tls else "",
            bool(flags),
        )
        if not flags:
            self.unacknowledged.forget()
        client.subscribe(
            [
                gmqtt.Subscription(name, qos=1, retain_handling_options=retain_handling(name))
                for name in [subscription(ch) for ch in protocol.DEVICE_CHANNELS]
                + [OWNTRACKS_SUBSCRIPTION]
            ]
        )
        self.client.reconnect_delay = RECONNECT_MIN_S
        self.connected.set()

    def _on_disconnect(self, client: Any, packet: Any, exc: Exception | None = None) -> None:
        self.connected.clear()
        if not self.closing:
            # Exponential backoff between attempts (gmqtt retries forever at this delay).
            delay = self.client.reconnect_delay
            self.client.reconnect_delay = min(RECONNECT_MAX_S, delay * 2)
            log.warning("connection to the broker lost; reconnecting in %s s", delay)

    async def _on_message(
        self, client: Any, topic_name: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        # Must stay ``async def``: with optimistic_acknowledgement=False a plain function
        # would mean no PUBACK is ever sent.
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        handler = self._on_retained if properties.get("retain") else self._handler
        key = Unacknowledged.key(topic_name, payload)
        self.unacknowledged.received(key)
        try:
            reason_code = await handler(topic_name, payload)
        finally:
            if task is not None:
                self._in_flight.discard(task)
        self.unacknowledged.acknowledged(key)  # gmqtt sends the PUBACK as this returns
        return reason_code


def retain_handling(name: str) -> int:
    """MQTT 5 Retain Handling of the hub's subscription ``name``: a device's retained ``status``
    when the subscription is new (1: the state of devices after the hub's session was lost),
    never anything else (2: a retained copy is not a new message)."""
    return 1 if name == subscription(RETAINED_CHANNEL) else 2


def broker_tls_context(config: BrokerConfig) -> ssl.SSLContext | None:
    """The hub's TLS context for the broker (None without ``tls``); warns on clear text."""
    if not config.tls:
        if not is_loopback(config.host):
            log.warning(
                "connecting to broker %s without TLS: the hub's password travels in clear; "
                "set [broker] tls = true",
                config.host,
            )
        return None
    cafile = config.trusted_ca_file
    try:
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[broker] ca_file {cafile}: cannot read a CA certificate ({exc})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
