"""The reference wristband against a real Mosquitto with the shipped config and ACL.

A plain paho client logged in as the hub plays the hub: it sees what devices publish and sends
``HubAck`` messages to their ``ack`` topic when the test says so.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker import HUB_USER
from devicekit import Wristband
from devicekit.protocol import (
    AckStage,
    Alarm,
    AlarmKind,
    Command,
    HubAck,
    Position,
    Status,
    parse_device_message,
    utcnow,
)
from devicekit.signing import decrypt, is_encrypted, new_key, parse_key, sign, verify
from devicekit.topics import parse_topic, topic
from tests.support.brokers import RunningBroker, start_broker
from tests.support.receivers import wait_until

REPO = Path(__file__).resolve().parents[1]
LAT, LON = 52.516275, 13.377704  # digits that must never show up in a log or on stdout
POSITION = Position(lat=LAT, lon=LON, accuracy_m=8.5, fix_ts=utcnow())
KEY = new_key()  # every test wristband's signing key; the stand-in checks each signature


@dataclass(frozen=True)
class Received:
    device_id: str
    channel: str
    payload: bytes  #: the message without its signature (the stand-in checked it)
    retained: bool


class HubStandIn:
    """A paho client with the hub's account: records device messages, acks on request."""

    def __init__(self, broker: RunningBroker, *, auto_ack: bool = False) -> None:
        self.auto_ack = auto_ack
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=HUB_USER, protocol=mqtt.MQTTv5
        )
        self._client.username_pw_set(HUB_USER, broker.hub_password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the hub stand-in could not subscribe"

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        channels = ["alarm", "cancel", "location", "heartbeat", "status"]
        client.subscribe([(f"natalia/v1/devices/+/{channel}", 1) for channel in channels])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device_id, channel = parse_topic(msg.topic)
        body = verify(parse_key(KEY), msg.topic, bytes(msg.payload))  # as the hub does
        with self._lock:
            self.received.append(Received(device_id, channel, body, bool(msg.retain)))
        if self.auto_ack and channel == "alarm":
            alarm = parse_device_message("alarm", body)
            assert isinstance(alarm, Alarm)
            self.ack(device_id, alarm.alarm_id, wait=False)

    def messages(self, device_id: str, channel: str) -> list[bytes]:
        with self._lock:
            return [
                r.payload
                for r in self.received
                if r.device_id == device_id and r.channel == channel
            ]

    def alarm_ids(self, device_id: str) -> list[str]:
        """The alarm id of every alarm message received from ``device_id``, in arrival order."""
        return [
            Alarm.model_validate_json(payload).alarm_id
            for payload in self.messages(device_id, "alarm")
        ]

    def alarm_ids_since_online(self, device_id: str) -> list[str]:
        """Alarm ids received after the device's latest ``online``: sent by its current session."""
        with self._lock:
            mine = [r for r in self.received if r.device_id == device_id]
        onlines = [
            i for i, r in enumerate(mine) if r.channel == "status" and b"online" in r.payload
        ]
        start = onlines[-1] if onlines else len(mine)
        return [
            Alarm.model_validate_json(r.payload).alarm_id
            for r in mine[start:]
            if r.channel == "alarm"
        ]

    def states(self, device_id: str) -> list[str]:
        return [
            parse_device_message("status", payload).state  # type: ignore[union-attr]
            for payload in self.messages(device_id, "status")
        ]

    def ack(
        self,
        device_id: str,
        alarm_id: str,
        stage: AckStage = AckStage.RECEIVED,
        *,
        wait: bool = True,
    ) -> None:
        name = topic(device_id, "ack")
        ack = HubAck(alarm_id=alarm_id, stage=stage, ts=utcnow()).to_payload()
        info = self._client.publish(name, sign(parse_key(KEY), name, ack), qos=1)
        if wait:
            info.wait_for_publish(10)

    def publish_raw(self, name: str, payload: bytes) -> None:
        self._client.publish(name, payload, qos=1).wait_for_publish(10)

    def command(self, device_id: str, command: Command) -> None:
        name = topic(device_id, "cmd")
        signed = sign(parse_key(KEY), name, command.to_payload())
        self._client.publish(name, signed, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def hub(broker: RunningBroker) -> Iterator[HubStandIn]:
    stand_in = HubStandIn(broker)
    try:
        yield stand_in
    finally:
        stand_in.close()


@pytest.fixture
def device(broker: RunningBroker) -> tuple[str, str]:
    return "wb-0001", broker.add_account("wb-0001")


def make_band(
    broker: RunningBroker, device: tuple[str, str], state_dir: Path, **options: Any
) -> Wristband:
    device_id, password = device
    options.setdefault("resend_interval", 0.3)
    return Wristband(
        device_id,
        password,
        key=KEY,
        host=broker.host,
        port=broker.port,
        state_dir=state_dir,
        **options,
    )


# -- store-and-forward ------------------------------------------------------------------------


def test_alarm_is_resent_with_the_same_id_until_acked_and_not_after(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        first = band.trigger(AlarmKind.PANIC, POSITION, battery=77)
        assert band.pending() == [first]

        copies = wait_until(lambda: len(hub.messages(device_id, "alarm")) >= 3 or None)
        assert copies is not None
        assert set(hub.messages(device_id, "alarm")) == {first.to_payload()}

        hub.ack(device_id, first.alarm_id)
        got = band.wait_for_ack(first.alarm_id, timeout=10)
        assert (got.alarm_id, got.stage) == (first.alarm_id, AckStage.RECEIVED)
        assert band.pending() == []

        # A second alarm proves re-send rounds go on; the first must not be in any of them.
        second = band.trigger(AlarmKind.FALL)
        wait_until(lambda: hub.alarm_ids(device_id).count(second.alarm_id) >= 4)
        ids = hub.alarm_ids(device_id)
        second_copy = [i for i, alarm_id in enumerate(ids) if alarm_id == second.alarm_id][1]
        assert first.alarm_id not in ids[second_copy:]


def test_an_encrypting_wristband_shows_the_broker_no_position(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    """What the broker (and anyone reading it) sees of an encrypting wristband: no coordinate."""
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state", encrypt=True) as band:
        band.wait_connected()
        alarm = band.trigger(AlarmKind.PANIC, POSITION)
        band.send_location(POSITION, alarm_id=alarm.alarm_id)
        wait_until(lambda: hub.messages(device_id, "location"))
        [envelope, *_] = hub.messages(device_id, "alarm")
    seen = b"".join(r.payload for r in hub.received)
    assert str(LAT).encode() not in seen and str(LON).encode() not in seen
    assert all(is_encrypted(r.payload) for r in hub.received if r.device_id == device_id)
    key = parse_key(KEY)
    opened = decrypt(key, topic(device_id, "alarm"), envelope)
    assert Alarm.model_validate_json(opened) == alarm


def test_an_ack_the_hub_did_not_sign_settles_nothing(
    broker: RunningBroker,
    hub: HubStandIn,
    device: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whoever controls the broker (here: its hub account) cannot fake the hub's ack."""
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        alarm = band.trigger(AlarmKind.PANIC, POSITION)
        name = topic(device_id, "ack")
        forged = HubAck(alarm_id=alarm.alarm_id, stage=AckStage.RESOLVED, ts=utcnow())
        hub.publish_raw(name, forged.to_payload())  # unsigned
        hub.publish_raw(name, sign(parse_key(new_key()), name, forged.to_payload()))  # other key
        wait_until(lambda: caplog.text.count("ignored a message on") >= 2)
        assert band.last_ack(alarm.alarm_id) is None and band.pending() == [alarm]
        count = len(hub.messages(device_id, "alarm"))
        wait_until(lambda: len(hub.messages(device_id, "alarm")) > count)  # still re-sent
        hub.ack(device_id, alarm.alarm_id)  # the hub's own, signed with the device's key
        assert band.wait_for_ack(alarm.alarm_id, timeout=10).stage is AckStage.RECEIVED
        assert band.pending() == []
    assert "RESOLVED" not in caplog.text and "resolved" not in caplog.text


def test_alarm_raised_before_the_broker_is_reachable_is_sent_once_it_is(
    tmp_path: Path,
) -> None:
    port = _free_port()
    device_id, password = f"wb-offline-{os.getpid()}", "pw-offline"
    band = Wristband(
        device_id,
        password,
        key=KEY,
        port=port,
        state_dir=tmp_path / "state",
        resend_interval=0.3,
        max_reconnect_delay=1,
    )
    with band:
        alarm = band.trigger(AlarmKind.PANIC, POSITION)
        assert not band.connected
        assert band.pending() == [alarm]

        late_broker = start_broker(tmp_path / "broker", port=port)
        try:
            late_broker.add_account(device_id, password)
            hub = HubStandIn(late_broker, auto_ack=True)
            try:
                ack = band.wait_for_ack(alarm.alarm_id, timeout=30)
                assert ack.stage is AckStage.RECEIVED
                assert alarm.to_payload() in hub.messages(device_id, "alarm")
            finally:
                hub.close()
        finally:
            late_broker.process.stop()


def test_pending_alarm_is_resent_by_the_next_process_with_the_same_id(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        alarm = band.trigger()
        wait_until(lambda: hub.alarm_ids(device_id))
    wait_until(lambda: hub.states(device_id) == ["online", "offline"])

    # A re-send round an hour away: only the re-send on connect can deliver it in time.
    restarted = make_band(broker, device, tmp_path / "state", resend_interval=3600)
    assert restarted.pending() == [alarm]
    with restarted:
        wait_until(lambda: hub.states(device_id) == ["online", "offline", "online"])
        wait_until(lambda: hub.alarm_ids_since_online(device_id) == [alarm.alarm_id])
        hub.ack(device_id, alarm.alarm_id)
        restarted.wait_for_ack(alarm.alarm_id, timeout=10)
        assert restarted.pending() == []


def test_ack_sent_while_the_wristband_was_away_arrives_when_it_returns(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state", resend_interval=60) as band:
        band.wait_connected()
        alarm = band.trigger()
        wait_until(lambda: hub.alarm_ids(device_id))
    wait_until(lambda: hub.states(device_id)[-1:] == ["offline"])

    hub.ack(device_id, alarm.alarm_id)  # queued by the broker in the wristband's session

    # The hub stand-in acks nothing more: only the queued ack can settle the alarm.
    with make_band(broker, device, tmp_path / "state", resend_interval=60) as back:
        got = back.wait_for_ack(alarm.alarm_id, timeout=10)
        assert got.stage is AckStage.RECEIVED
        assert back.pending() == []


def test_ack_stages_are_reported_in_order_and_waits_match_later_stages(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    seen: list[AckStage] = []
    with make_band(
        broker, device, tmp_path / "state", on_ack=lambda a: seen.append(a.stage)
    ) as band:
        band.wait_connected()
        alarm = band.trigger()
        hub.ack(device_id, alarm.alarm_id, AckStage.NOTIFIED)
        assert band.wait_for_ack(alarm.alarm_id).stage is AckStage.NOTIFIED
        hub.ack(device_id, alarm.alarm_id, AckStage.RECEIVED)  # late duplicate: ignored
        hub.ack(device_id, alarm.alarm_id, AckStage.RESPONDER_COMING)
        got = band.wait_for_ack(alarm.alarm_id, AckStage.RESPONDER_COMING, timeout=10)
        assert got.stage is AckStage.RESPONDER_COMING
        wait_until(lambda: len(seen) >= 2)
        assert seen == [AckStage.NOTIFIED, AckStage.RESPONDER_COMING]


def test_wait_for_ack_times_out_with_a_clear_message(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        alarm = band.trigger()
        with pytest.raises(TimeoutError, match=rf"no 'received' ack for alarm {alarm.alarm_id}"):
            band.wait_for_ack(alarm.alarm_id, timeout=0.5)
        assert band.pending() == [alarm]


def test_cancel_is_resent_until_the_hub_says_cancelled(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        alarm = band.trigger()
        hub.ack(device_id, alarm.alarm_id)
        band.wait_for_ack(alarm.alarm_id, timeout=10)

        cancel = band.cancel(alarm.alarm_id, "4711")
        wait_until(lambda: len(hub.messages(device_id, "cancel")) >= 2)
        assert set(hub.messages(device_id, "cancel")) == {cancel.to_payload()}
        hub.ack(device_id, alarm.alarm_id, AckStage.NOTIFIED)
        assert band.wait_for_ack(alarm.alarm_id, AckStage.NOTIFIED).stage is AckStage.NOTIFIED
        assert band.pending_messages() == [cancel]

        hub.ack(device_id, alarm.alarm_id, AckStage.CANCELLED)
        band.wait_settled(alarm.alarm_id, timeout=10)
        assert band.pending_messages() == []


def test_location_and_heartbeat_reach_the_hub_with_increasing_seq(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        alarm = band.trigger()
        location = band.send_location(POSITION, alarm.alarm_id)
        beat = band.heartbeat(300, battery=50)
        wait_until(lambda: hub.messages(device_id, "heartbeat"))
        wait_until(lambda: hub.messages(device_id, "location"))
        assert hub.messages(device_id, "location") == [location.to_payload()]
        assert hub.messages(device_id, "heartbeat") == [beat.to_payload()]
        assert alarm.seq < location.seq < beat.seq


def test_command_from_the_hub_reaches_the_callback(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    commands: list[Command] = []
    with make_band(broker, device, tmp_path / "state", on_command=commands.append) as band:
        band.wait_connected()
        wait_until(lambda: hub.states(device[0])[-1:] == ["online"])
        sent = Command(cmd_id="c-1", name="locate")
        hub.command(device[0], sent)
        wait_until(lambda: commands)
        assert commands == [sent]


# -- presence ---------------------------------------------------------------------------------


def test_status_online_on_connect_and_last_will_offline_when_the_link_dies(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        wait_until(lambda: hub.states(device_id) == ["online"])

        sock = band._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # no DISCONNECT packet: the broker sends the will

        wait_until(lambda: hub.states(device_id)[:2] == ["online", "offline"])
        try:
            wait_until(lambda: hub.states(device_id)[2:] == ["online"], timeout=20)
        except AssertionError:
            raise AssertionError(
                f"states {hub.states(device_id)} connected={band.connected}"
            ) from None
        band.wait_connected()


def test_status_is_retained_online_while_connected_and_offline_after_stop(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]

    def retained_states() -> list[tuple[str, bool]]:
        hub.close()  # a late subscriber takes over the hub's client id
        late = HubStandIn(broker)
        try:
            wait_until(lambda: late.states(device_id))
            return [
                (Status.model_validate_json(r.payload).state, r.retained)
                for r in late.received
                if r.channel == "status"
            ]
        finally:
            late.close()

    with make_band(broker, device, tmp_path / "state") as band:
        band.wait_connected()
        wait_until(lambda: hub.states(device_id) == ["online"])
        assert retained_states() == [("online", True)]
    assert retained_states() == [("offline", True)]


# -- safety -----------------------------------------------------------------------------------


def test_logs_name_alarm_ids_but_never_coordinates_codes_or_the_password(
    broker: RunningBroker,
    hub: HubStandIn,
    device: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    device_id, password = device
    with make_band(broker, device, tmp_path / "state") as band:
        band._client.enable_logger(logging.getLogger("paho"))
        band.wait_connected()
        alarm = band.trigger(AlarmKind.DURESS, POSITION)
        band.send_location(POSITION, alarm.alarm_id)
        band.cancel(alarm.alarm_id, "secret-code-99")
        hub.ack(device_id, alarm.alarm_id, AckStage.CANCELLED)
        band.wait_settled(alarm.alarm_id, timeout=10)
    assert alarm.alarm_id in caplog.text
    for secret in (str(LAT), str(LON), "52.51", "13.37", "secret-code-99", password):
        assert secret not in caplog.text


def test_a_second_client_on_the_same_state_dir_is_refused(
    broker: RunningBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    with (
        make_band(broker, device, tmp_path / "state"),
        pytest.raises(RuntimeError, match="in use by another client"),
    ):
        make_band(broker, device, tmp_path / "state")


# -- the simulator ----------------------------------------------------------------------------


def simulate(
    broker: RunningBroker, device: tuple[str, str], state_dir: Path, out: Path, *args: str
) -> subprocess.Popen[bytes]:
    device_id, password = device
    env = {**os.environ, "NATALIA_DEVICE_PASSWORD": password, "NATALIA_DEVICE_KEY": KEY}
    command = [
        sys.executable,
        "-m",
        "devicekit",
        "simulate",
        "--host",
        broker.host,
        "--port",
        str(broker.port),
        "--device-id",
        device_id,
        "--state-dir",
        str(state_dir),
        "--resend-interval",
        "0.5",
        *args,
    ]
    with out.open("wb") as stdout:
        return subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def test_simulate_survives_kill_9_and_resume_resends_the_same_alarm(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    device_id = device[0]
    state = tmp_path / "state"
    first_out, second_out = tmp_path / "first.log", tmp_path / "second.log"
    position = ["--lat", str(LAT), "--lon", str(LON), "--accuracy", "9"]
    first = simulate(broker, device, state, first_out, *position, "--wait", "60")
    try:
        alarm_id = wait_until(lambda: hub.alarm_ids(device_id), timeout=30)[0]
        wait_until(lambda: f"alarm {alarm_id} (panic) sent\n" in first_out.read_text())
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    wait_until(lambda: hub.states(device_id) == ["online", "offline"])  # the broker's last will

    second = simulate(broker, device, state, second_out, "--resume", "--wait", "60")
    try:
        wait_until(lambda: hub.states(device_id)[-1:] == ["online"], timeout=30)
        wait_until(lambda: hub.alarm_ids_since_online(device_id), timeout=30)
        assert set(hub.alarm_ids(device_id)) == {alarm_id}
        hub.ack(device_id, alarm_id)
        assert second.wait(30) == 0, second_out.read_text()
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    first_text, second_text = first_out.read_text(), second_out.read_text()
    assert f"alarm {alarm_id} (panic) pending" in second_text
    assert f"ack received for alarm {alarm_id}" in second_text
    for text in (first_text, second_text):
        assert str(LAT) not in text
        assert str(LON) not in text
        assert "52.51" not in text


def test_simulate_exits_3_when_no_ack_comes(
    broker: RunningBroker, hub: HubStandIn, device: tuple[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.log"
    process = simulate(broker, device, tmp_path / "state", out, "--kind", "test", "--wait", "1")
    assert process.wait(30) == 3, out.read_text()
    assert re.search(r"timeout after 1 s: alarm \S+ not settled by the hub", out.read_text())
    assert hub.alarm_ids(device[0])


def test_simulate_resume_with_nothing_pending_exits_0(
    broker: RunningBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.log"
    process = simulate(broker, device, tmp_path / "state", out, "--resume")
    assert process.wait(30) == 0, out.read_text()
    assert "nothing pending" in out.read_text()


def test_simulate_without_password_says_how_to_give_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NATALIA_DEVICE_PASSWORD"}
    result = subprocess.run(
        [sys.executable, "-m", "devicekit", "simulate", "--device-id", "wb-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 2
    assert "NATALIA_DEVICE_PASSWORD" in result.stderr


# -- documentation and examples ---------------------------------------------------------------


def device_env(broker: RunningBroker, device: tuple[str, str], state_dir: Path) -> dict[str, str]:
    return {
        "NATALIA_MQTT_HOST": broker.host,
        "NATALIA_MQTT_PORT": str(broker.port),
        "NATALIA_DEVICE_ID": device[0],
        "NATALIA_DEVICE_PASSWORD": device[1],
        "NATALIA_DEVICE_KEY": KEY,
        "NATALIA_STATE_DIR": str(state_dir),
    }


def test_readme_python_blocks_run_against_a_real_broker(
    broker: RunningBroker,
    device: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (REPO / "devicekit" / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    assert blocks, "devicekit/README.md has no python code blocks"
    for name, value in device_env(broker, device, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    hub = HubStandIn(broker, auto_ack=True)
    try:
        namespace: dict[str, object] = {"__name__": "readme"}
        for number, block in enumerate(blocks, 1):
            code = compile(block, f"devicekit/README.md block {number}", "exec")
            exec(code, namespace)  # noqa: S102 (our own README)
        assert hub.alarm_ids(device[0]), "the README's blocks raised no alarm"
    finally:
        hub.close()
    printed = capsys.readouterr().out
    assert "received" in printed
    assert "-12.04" not in printed  # the README's made-up fix
    assert "-77.04" not in printed


def test_example_simulate_alarm_script_gets_its_ack(
    broker: RunningBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    hub = HubStandIn(broker, auto_ack=True)
    try:
        result = subprocess.run(
            [sys.executable, str(REPO / "examples" / "device" / "simulate_alarm.py")],
            capture_output=True,
            text=True,
            env={**os.environ, **device_env(broker, device, tmp_path / "state")},
            cwd=REPO,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert hub.alarm_ids(device[0])
        assert "received" in result.stdout
    finally:
        hub.close()


def test_example_script_exits_3_without_a_hub(
    broker: RunningBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "device" / "simulate_alarm.py"),
            "--wait",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **device_env(broker, device, tmp_path / "state")},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 3, result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
