"""The reference wristband client: protocol v1 over MQTT 5 with store-and-forward.

A defender pulls the wristband once and cannot be asked to try again, so this client treats every
alarm as precious: it is written to disk before it is published (:mod:`devicekit.outbox`), and
published again with the *same* ``alarm_id`` on every (re)connect and every ``resend_interval``
seconds until the hub acks it. The hub de-duplicates on ``alarm_id``; duplicates are expected.

The MQTT session outlives a disconnect (``clean_start=False`` *and* a session expiry > 0; without
the expiry MQTT 5 ends the session anyway), so acks the hub sent while the wristband was away are
delivered when it comes back. The broker announces a lost connection with the retained last will
``status: offline``.

Logs name alarm ids and kinds only: never positions, cancel codes or the password.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from devicekit.bundle import ProvisioningBundle, load_bundle
from devicekit.outbox import STAGE_RANK, Outbox, PendingMessage
from devicekit.protocol import (
    AckStage,
    Alarm,
    AlarmKind,
    Cancel,
    Command,
    Heartbeat,
    HubAck,
    Location,
    Position,
    Status,
    utcnow,
)
from devicekit.signing import SignatureError, encrypt, parse_key, sign, verify
from devicekit.topics import parse_topic, topic, validate_device_id

log = logging.getLogger(__name__)
T = TypeVar("T")

QOS: Final = 1
#: One week: acks queued by the broker while the wristband is away are kept this long. A longer
#: absence is covered by the re-send, which makes the hub ack again.
DEFAULT_SESSION_EXPIRY_S: Final = 7 * 24 * 3600
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_alarm_id() -> str:
    """A ULID: unique without coordination, and sorts by creation time for people reading logs."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(secrets.token_bytes(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def describe(message: PendingMessage) -> str:
    """How logs and the simulator name a stored message: its alarm id and kind, nothing else."""
    if isinstance(message, Alarm):
        return f"alarm {message.alarm_id} ({message.kind.value})"
    return f"cancel of alarm {message.alarm_id}"


class Wristband:
    """One wristband's connection to the hub through the broker.

    ``state_dir`` holds the outbox (pending alarms, the ``seq`` counter) and must survive
    restarts; one process at a time may use it. Call :meth:`start` (or use ``with``) to connect;
    every method that sends works while offline too: alarms and cancels wait on disk, location
    updates and heartbeats wait in memory.

    ``on_ack`` is called once per new stage an alarm reaches (not for duplicates or late, lower
    stages); ``on_command`` for every hub command. Both run on the MQTT network thread: keep them
    short, and let them raise nothing they care about (exceptions are logged and dropped).
    """

    def __init__(
        self,
        device_id: str,
        password: str,
        *,
        key: str,
        encrypt: bool = False,
        state_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 1883,
        tls: ssl.SSLContext | None = None,
        resend_interval: float = 5.0,
        keepalive: int = 30,
        session_expiry: int = DEFAULT_SESSION_EXPIRY_S,
        max_reconnect_delay: int = 15,
        on_ack: Callable[[HubAck], None] | None = None,
        on_command: Callable[[Command], None] | None = None,
    ) -> None:
        if resend_interval <= 0:
            raise ValueError("resend_interval must be > 0 seconds")
        if session_expiry <= 0:
            raise ValueError("session_expiry must be > 0, or the broker drops acks sent while away")
        self.device_id = validate_device_id(device_id)
        self._key = parse_key(key)
        self.encrypt = encrypt
        self.host, self.port = host, port
        self.resend_interval = resend_interval
        self.keepalive = keepalive
        self.on_ack = on_ack
        self.on_command = on_command
        self.state_dir = Path(state_dir)
        self._lock_fd: int | None = _lock_state_dir(self.state_dir, device_id)
        self._open_outbox = Outbox(self.state_dir)
        self._acks_changed = threading.Condition()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._resender: threading.Thread | None = None
        self._mid_lock = threading.Lock()
        self._labels: dict[int, str | None] = {}
        self._acked_early: set[int] = set()
        self._client = self._make_client(password, tls, session_expiry, max_reconnect_delay)
        if tls is None and not is_loopback(host):
            log.warning(
                "connecting to %s without TLS: positions and the password travel in clear", host
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Wristband:
        """Connect in the background and keep reconnecting; returns at once, even offline.

        A stopped wristband may be started again (it reopens its state dir).
        """
        if self._resender is not None:
            return self  # already running
        if self._lock_fd is None:
            self._lock_fd = _lock_state_dir(self.state_dir, self.device_id)
            self._open_outbox = Outbox(self.state_dir)
        self._stopping.clear()
        self._client.connect_async(
            self.host,
            self.port,
            keepalive=self.keepalive,
            clean_start=False,
            properties=self._connect_properties,
        )
        self._client.loop_start()
        self._resender = threading.Thread(
            target=self._resend_loop, name=f"resend-{self.device_id}", daemon=True
        )
        self._resender.start()
        return self

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until the broker has accepted the connection; ``TimeoutError`` otherwise."""
        if not self._connected.wait(timeout):
            raise TimeoutError(
                f"wristband {self.device_id} not connected to {self.host}:{self.port} after "
                f"{timeout:g} s; check the address, the account and the broker log"
            )

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and it is up now."""
        return self._connected.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline``, disconnect and close the state dir. Pending alarms stay on disk."""
        if self._lock_fd is None:
            return
        self._stopping.set()
        if self._resender is not None:
            self._resender.join()
        if self._client.is_connected():
            info = self._publish("status", self._status("offline"), retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("could not publish status offline; the broker's last will covers it")
        self._client.disconnect()
        self._client.loop_stop()
        self._resender = None
        self._open_outbox.close()
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Wristband:
        return self.start()

    @property
    def _outbox(self) -> Outbox:
        if self._lock_fd is None:
            raise RuntimeError(f"wristband {self.device_id} is stopped; call start() first")
        return self._open_outbox

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- sending ------------------------------------------------------------------------------

    def trigger(
        self,
        kind: AlarmKind = AlarmKind.PANIC,
        position: Position | None = None,
        battery: int | None = None,
    ) -> Alarm:
        """Raise an alarm: store it durably, then publish it. Returns the stored alarm.

        Once this returns, the alarm survives a crash and is re-sent until the hub acks it; it
        does not raise after the alarm is stored. An invalid ``position`` or ``battery`` raises
        ``ValueError`` and stores nothing.
        """
        alarm_id = new_alarm_id()
        alarm = self._outbox.store_new(
            lambda seq: Alarm(
                alarm_id=alarm_id,
                kind=kind,
                ts=utcnow(),
                seq=seq,
                position=position,
                battery=battery,
            )
        )
        log.info("%s stored", describe(alarm))
        self._send_stored(alarm)
        return alarm

    def cancel(self, alarm_id: str, code: str) -> Cancel:
        """Ask the hub to cancel an alarm; stored and re-sent like an alarm until it is settled."""
        cancel = self._outbox.store_new(
            lambda seq: Cancel(alarm_id=alarm_id, ts=utcnow(), seq=seq, code=code)
        )
        log.info("%s stored", describe(cancel))
        self._send_stored(cancel)
        return cancel

    def send_location(self, position: Position, alarm_id: str | None = None) -> Location:
        """Report a position (tracking during an alarm); kept in memory while offline."""
        location = Location(
            alarm_id=alarm_id, ts=utcnow(), seq=self._outbox.next_seq(), position=position
        )
        self._publish("location", location.to_payload())
        return location

    def heartbeat(self, interval_s: int, battery: int | None = None) -> Heartbeat:
        """Tell the hub the wristband is alive and when to expect the next heartbeat."""
        beat = Heartbeat(
            ts=utcnow(), seq=self._outbox.next_seq(), battery=battery, interval_s=interval_s
        )
        self._publish("heartbeat", beat.to_payload())
        return beat

    # -- state --------------------------------------------------------------------------------

    def pending(self) -> list[Alarm]:
        """Alarms stored but not yet acked by the hub, oldest first."""
        return self._outbox.pending_alarms()

    def pending_messages(self) -> list[PendingMessage]:
        """Alarms and cancels not yet settled by the hub, oldest first."""
        return self._outbox.pending()

    def last_ack(self, alarm_id: str) -> HubAck | None:
        """The furthest ack the hub sent for ``alarm_id`` (kept on disk), or ``None``."""
        return self._outbox.last_ack(alarm_id)

    def wait_for_ack(
        self, alarm_id: str, stage: AckStage = AckStage.RECEIVED, timeout: float = 30.0
    ) -> HubAck:
        """Block until the hub's ack for ``alarm_id`` has reached ``stage``; return that ack.

        Stages are ordered received < notified < responder_coming < resolved; ``cancelled`` ends
        an alarm like ``resolved``, so either satisfies a wait for the other. Raises
        ``TimeoutError`` if no such ack came; the alarm stays pending and keeps being re-sent.
        """
        wanted = STAGE_RANK[stage]

        def reached() -> HubAck | None:
            ack = self._outbox.last_ack(alarm_id)
            return ack if ack is not None and STAGE_RANK[ack.stage] >= wanted else None

        found = self._wait(reached, timeout)
        if found is None:
            what = f"no {stage.value!r} ack for alarm {alarm_id}"
            raise TimeoutError(self._timeout_reason(what, alarm_id, timeout))
        return found

    def wait_settled(self, alarm_id: str, timeout: float = 30.0) -> None:
        """Block until nothing about ``alarm_id`` is pending (the alarm and any cancel of it).

        A cancel is settled only by ``cancelled`` or ``resolved``; see ``PROTOCOL.md``.
        """
        if not self._wait(lambda: not self._outbox.is_pending(alarm_id), timeout):
            what = f"alarm {alarm_id} not settled by the hub"
            raise TimeoutError(self._timeout_reason(what, alarm_id, timeout))

    def _wait(self, condition: Callable[[], T | None], timeout: float) -> T | None:
        deadline = time.monotonic() + timeout
        with self._acks_changed:
            while not (result := condition()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._acks_changed.wait(remaining)
            return result

    # -- MQTT plumbing ------------------------------------------------------------------------

    def _make_client(
        self,
        password: str,
        tls: ssl.SSLContext | None,
        session_expiry: int,
        max_reconnect_delay: int,
    ) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
        )
        client.username_pw_set(self.device_id, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.will_set(
            topic(self.device_id, "status"),
            self._seal("status", self._status("offline")),
            qos=QOS,
            retain=True,
        )
        client.reconnect_delay_set(min_delay=1, max_delay=max_reconnect_delay)
        # A bug in our callbacks must not kill the network thread (and with it every re-send).
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._connect_properties.SessionExpiryInterval = session_expiry
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        log.info("connected to %s:%s", self.host, self.port)
        client.subscribe([(topic(self.device_id, "ack"), QOS), (topic(self.device_id, "cmd"), QOS)])
        self._publish("status", self._status("online"), retain=True)
        self._connected.set()
        self._resend_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("connection lost (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            channel = parse_topic(message.topic).channel
            # Only the hub knows the key: an ack or command it did not sign is ignored, so whoever
            # controls the broker cannot stop the re-sends of an alarm the hub never stored.
            body = verify(self._key, message.topic, bytes(message.payload))
            if channel == "ack":
                self._handle_ack(HubAck.model_validate_json(body))
            elif channel == "cmd":
                self._handle_command(Command.model_validate_json(body))
        except SignatureError as exc:
            log.warning("ignored a message on %s: %s", message.topic, exc)
        except ValidationError as exc:
            # Field paths and error types only: the input may hold data we must not log.
            reasons = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'payload'}: {error['type']}"
                for error in exc.errors()
            )
            log.warning("ignored an invalid message on %s: %s", message.topic, reasons)
        except Exception:
            log.exception("failed to handle a message on %s", message.topic)

    def _handle_ack(self, ack: HubAck) -> None:
        # Commit before returning: paho sends the PUBACK afterwards, so a crash here means the
        # broker delivers the ack again.
        advanced = self._outbox.acknowledge(ack)
        log.info("ack %s for alarm %s", ack.stage.value, ack.alarm_id)
        with self._acks_changed:
            self._acks_changed.notify_all()
        if advanced and self.on_ack is not None:
            _run_callback("on_ack", self.on_ack, ack)

    def _handle_command(self, command: Command) -> None:
        log.info("command %s (%s)", command.cmd_id, command.name)
        if self.on_command is not None:
            _run_callback("on_command", self.on_command, command)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        # paho may confirm a message before publish() has returned its mid to us.
        with self._mid_lock:
            if mid not in self._labels:
                self._acked_early.add(mid)
                return
            label = self._labels.pop(mid)
        self._log_delivered(label, reason_code)

    def _log_delivered(self, label: str | None, reason_code: ReasonCode) -> None:
        if label is None:
            return
        if reason_code.is_failure:
            log.warning("%s refused by the broker: %s", label, reason_code)
        else:
            log.info("%s sent", label)

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        status = Status(state=state, ts=utcnow(), seq=self._open_outbox.next_seq())
        return status.to_payload()

    def _seal(self, channel: str, body: bytes) -> bytes:
        """Encrypt (if configured) and sign ``body`` for ``channel`` (PROTOCOL.md 5.5)."""
        name = topic(self.device_id, channel)
        if self.encrypt:
            body = encrypt(self._key, name, body)
        return sign(self._key, name, body)

    def _publish(
        self, channel: str, body: bytes, *, retain: bool = False, label: str | None = None
    ) -> mqtt.MQTTMessageInfo:
        payload = self._seal(channel, body)
        info = self._client.publish(topic(self.device_id, channel), payload, QOS, retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish on %s failed: %s", channel, mqtt.error_string(info.rc))
        with self._mid_lock:
            delivered = info.mid in self._acked_early
            if delivered:
                self._acked_early.discard(info.mid)
            else:
                self._labels[info.mid] = label
        if delivered:
            self._log_delivered(label, ReasonCode(PacketTypes.PUBACK))
        return info

    def _send_stored(self, message: PendingMessage) -> None:
        # Offline, the next connect re-sends everything pending; queuing it in paho as well
        # would only pile up copies in memory.
        if not self._client.is_connected():
            log.info("%s waits for the connection", describe(message))
            return
        try:
            self._publish(message.type, message.to_payload(), label=describe(message))
        except Exception:  # it is stored: the next re-send round tries again
            log.exception("publishing %s failed; it will be re-sent", describe(message))

    def _resend_all(self) -> None:
        for message in self._outbox.pending():
            log.info("re-sending %s", describe(message))
            self._publish(message.type, message.to_payload(), label=describe(message))

    def _resend_loop(self) -> None:
        while not self._stopping.wait(self.resend_interval):
            if self._client.is_connected():
                try:
                    self._resend_all()
                except Exception:
                    log.exception("re-send failed; next try in %g s", self.resend_interval)

    def _timeout_reason(self, what: str, alarm_id: str, timeout: float) -> str:
        ack = self._outbox.last_ack(alarm_id)
        got = f"last ack was {ack.stage.value!r}" if ack else "no ack at all"
        link = "connected" if self.connected else f"NOT connected to {self.host}:{self.port}"
        return (
            f"{what} within {timeout:.3g} s ({got}; {link}); "
            "what is pending stays stored and is re-sent until the hub acks it"
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: ProvisioningBundle | str | os.PathLike[str],
        *,
        state_dir: str | os.PathLike[str],
        **kwargs: Any,
    ) -> Wristband:
        """A wristband set up from its provisioning bundle (``natalia device provision``).

        ``bundle`` is the bundle, its file's path or its JSON text (a scanned QR code). Host,
        port, key, ``encrypt`` and a TLS context that verifies the broker with the bundle's CA
        (and presents the client certificate when the bundle has one) come from it; any other
        constructor argument, or one of these to override, goes in ``kwargs``.
        """
        if not isinstance(bundle, ProvisioningBundle):
            bundle = load_bundle(bundle)
        options: dict[str, Any] = {
            "host": bundle.host,
            "port": bundle.port,
            "key": bundle.key,
            "encrypt": bundle.encrypt,
        }
        options.update(kwargs)
        if "tls" not in options:
            options["tls"] = bundle.tls_context()
        return cls(bundle.device_id, bundle.password, state_dir=state_dir, **options)


def _run_callback(name: str, callback: Callable[[Any], None], argument: Any) -> None:
    try:
        callback(argument)
    except Exception:
        log.exception("%s callback failed", name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (no TLS needed to keep secrets off the network)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _lock_state_dir(state_dir: Path, device_id: str) -> int:
    """Hold an exclusive lock on the state dir: two clients on one outbox would fight."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / "lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(
            f"state dir {state_dir} is in use by another client of device {device_id}; "
            "stop it first (one process per wristband)"
        ) from None
    return fd
