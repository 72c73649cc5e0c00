"""The device outbox: what is stored survives restarts and kill -9 until the hub acks it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devicekit.outbox import DB_NAME, Outbox
from devicekit.protocol import AckStage, Alarm, AlarmKind, Cancel, HubAck, Position

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def new_alarm(outbox: Outbox, alarm_id: str, kind: AlarmKind = AlarmKind.PANIC) -> Alarm:
    return outbox.store_new(
        lambda seq: Alarm(
            alarm_id=alarm_id,
            kind=kind,
            ts=NOW,
            seq=seq,
            position=Position(lat=1.5, lon=2.5, accuracy_m=10, fix_ts=NOW),
        )
    )


def new_cancel(outbox: Outbox, alarm_id: str, code: str = "4711") -> Cancel:
    return outbox.store_new(lambda seq: Cancel(alarm_id=alarm_id, ts=NOW, seq=seq, code=code))


def ack(alarm_id: str, stage: AckStage) -> HubAck:
    return HubAck(alarm_id=alarm_id, stage=stage, ts=NOW)


def test_pending_alarm_survives_reopening_byte_for_byte(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        stored = new_alarm(outbox, "a-1")
    with Outbox(tmp_path) as reopened:
        assert reopened.pending() == [stored]
        assert reopened.pending()[0].to_payload() == stored.to_payload()


def test_pending_is_oldest_first_and_alarms_only_on_request(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        first = new_alarm(outbox, "a-1")
        cancel = new_cancel(outbox, "a-1")
        second = new_alarm(outbox, "a-2", AlarmKind.FALL)
        assert outbox.pending() == [first, cancel, second]
        assert outbox.pending_alarms() == [first, second]


def test_seq_is_strictly_increasing_across_reopening(tmp_path: Path) -> None:
    seen: list[int] = []
    for _ in range(3):
        with Outbox(tmp_path) as outbox:
            seen.append(outbox.next_seq())
            seen.append(new_alarm(outbox, f"a-{len(seen)}").seq)
            seen.append(outbox.next_seq())
    assert seen == sorted(set(seen))
    assert len(seen) == 9


def test_seq_is_unique_under_concurrent_use(tmp_path: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()
    with Outbox(tmp_path) as outbox:

        def take() -> None:
            for _ in range(50):
                value = outbox.next_seq()
                with lock:
                    results.append(value)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(set(results)) == 200


def test_a_message_that_fails_validation_stores_nothing_and_uses_no_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        before = outbox.next_seq()
        with pytest.raises(ValueError, match="battery"):
            outbox.store_new(
                lambda seq: Alarm(
                    alarm_id="a-1", kind=AlarmKind.PANIC, ts=NOW, seq=seq, battery=500
                )
            )
        assert outbox.pending() == []
        assert outbox.next_seq() == before + 1


def test_any_ack_settles_the_alarm_and_is_remembered(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        new_alarm(outbox, "a-1")
        kept = new_alarm(outbox, "a-2")
        outbox.acknowledge(ack("a-1", AckStage.RECEIVED))
        assert outbox.pending() == [kept]
        assert not outbox.is_pending("a-1")
    with Outbox(tmp_path) as reopened:
        assert reopened.pending() == [kept]
        last = reopened.last_ack("a-1")
        assert last is not None
        assert last.stage is AckStage.RECEIVED
        assert reopened.last_ack("a-2") is None


def test_duplicate_and_late_acks_never_lower_the_known_stage(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        new_alarm(outbox, "a-1")
        assert outbox.acknowledge(ack("a-1", AckStage.NOTIFIED)) is True
        assert outbox.acknowledge(ack("a-1", AckStage.RECEIVED)) is False
        assert outbox.acknowledge(ack("a-1", AckStage.NOTIFIED)) is False
        assert outbox.last_ack("a-1") == ack("a-1", AckStage.NOTIFIED)
        assert outbox.acknowledge(ack("a-1", AckStage.RESOLVED)) is True
        last = outbox.last_ack("a-1")
        assert last is not None
        assert last.stage is AckStage.RESOLVED


def test_cancel_waits_for_cancelled_not_for_the_alarms_progress(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        new_alarm(outbox, "a-1")
        outbox.acknowledge(ack("a-1", AckStage.RECEIVED))
        cancel = new_cancel(outbox, "a-1")
        outbox.acknowledge(ack("a-1", AckStage.NOTIFIED))
        assert outbox.pending() == [cancel]
        outbox.acknowledge(ack("a-1", AckStage.CANCELLED))
        assert outbox.pending() == []


def test_resolved_also_settles_a_pending_cancel(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        new_alarm(outbox, "a-1")
        new_cancel(outbox, "a-1")
        outbox.acknowledge(ack("a-1", AckStage.RESOLVED))
        assert outbox.pending() == []


def test_a_new_cancel_replaces_the_unacked_one_of_the_same_alarm(tmp_path: Path) -> None:
    with Outbox(tmp_path) as outbox:
        new_cancel(outbox, "a-1", code="1111")
        latest = new_cancel(outbox, "a-1", code="2222")
        assert outbox.pending() == [latest]


def test_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Outbox(state) as outbox:
        new_alarm(outbox, "a-1")
        files = [path for path in state.iterdir() if path.name.startswith(DB_NAME)]
        assert {path.name for path in files} >= {DB_NAME, f"{DB_NAME}-wal"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from devicekit.outbox import Outbox
    from devicekit.protocol import Alarm, AlarmKind

    outbox = Outbox(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        alarm = outbox.store_new(lambda seq: Alarm(
            alarm_id=f"k-{n}", kind=AlarmKind.TEST, ts=datetime.now(UTC), seq=seq))
        print(alarm.alarm_id, alarm.seq, flush=True)
    """
)


def test_kill_9_while_storing_loses_nothing_that_was_reported_stored(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    reported: dict[str, int] = {}
    try:
        while len(reported) < 50:
            line = process.stdout.readline()
            assert line, "the writer died before storing 50 alarms"
            alarm_id, seq = line.split()
            reported[alarm_id] = int(seq)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    with Outbox(tmp_path) as outbox:
        pending = {message.alarm_id: message.seq for message in outbox.pending()}
        assert reported.items() <= pending.items()
        assert outbox.next_seq() > max(pending.values())
