"""Alarms survive faults: the hub killed, the broker killed, the database away, a storm on a
failing channel. Each test runs one scenario of ``hub.faults`` (real Mosquitto, the hub as a
child process, real wristband clients, a real HTTP receiver) at a size the suite can afford;
``scripts/chaos.py`` runs the same scenarios bigger. Every scenario stops what it started, also
when it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.faults import FaultResult, run_broker_kill, run_db_down, run_hub_kill, run_storm

#: Longest wait inside a scenario; a failure shows as counts, not as a hang.
SETTLE_S = 90.0
STORM_WAIT_S = 180.0


def assert_nothing_lost(result: FaultResult) -> None:
    assert result.sent > 0, result
    assert result.checks["settled"] == 1, result  # everything reached its final state
    assert result.stored == result.sent, result
    assert result.notified == result.sent, result
    assert result.lost == 0, result
    assert result.acked == result.sent, result  # every wristband heard the hub's ack
    # At-least-once: an extra copy only for a send a fault cut off, at most one per such send.
    assert result.unexplained_duplicates == 0, result
    assert result.duplicated <= result.duplicate_bound, result


@pytest.mark.timeout(300)
def test_alarms_survive_repeated_kill_9_of_the_hub_and_duplicates_stay_within_the_bound(
    tmp_path: Path,
) -> None:
    # Two kills at random moments, then six each while the hub is sending: the same deliveries
    # are cut off six times, and an interruption must not use up their channel's 5 attempts.
    # A short send timeout keeps the lease (twice it) short, so each restart re-sends quickly.
    result = run_hub_kill(
        tmp_path / "hub-kill",
        rounds=2,
        aimed=6,
        devices=2,
        alarms=3,
        seed=2024,
        timeout=SETTLE_S,
        delivery_timeout_s=2.0,
    )
    assert_nothing_lost(result)
    assert result.checks["aimed_kills"] == 6, result
    assert result.checks["most_cuts_of_one_delivery"] >= 6, result


@pytest.mark.timeout(300)
def test_alarms_a_killed_broker_lost_are_resent_by_the_wristbands(tmp_path: Path) -> None:
    result = run_broker_kill(tmp_path / "broker-kill", devices=4, alarms=4, timeout=SETTLE_S)
    assert_nothing_lost(result)
    assert result.duplicated == 0, result  # the hub itself never crashed
    # The fault was real: the broker kept the alarms of its last snapshot and lost the rest.
    assert result.checks["queue_drained"] == 1, result
    assert 0 < result.checks["kept_by_broker"] < result.sent, result


@pytest.mark.timeout(300)
@pytest.mark.postgres
def test_alarms_raised_while_the_database_is_away_are_not_acked_and_all_stored_after(
    tmp_path: Path, postgres_server_url: str
) -> None:
    # Three alarms of each wristband pending at once, and a newer one overtaking them the moment
    # the database is back: the broker and the wristbands re-send in another order than seq.
    result = run_db_down(
        postgres_server_url,
        tmp_path / "db-down",
        devices=3,
        alarms=3,
        outage_s=5.0,
        timeout=SETTLE_S,
    )
    assert result.checks["storage_errors_seen"] == 1, result  # the hub did try to store
    assert result.checks["acked_while_down"] == 0, result
    assert result.checks["pending_while_down"] == result.checks["raised_while_down"] == 9, result
    assert result.checks["raised_right_after"] == 3, result
    assert_nothing_lost(result)


@pytest.mark.timeout(600)
def test_storm_of_1000_alarms_on_a_failing_channel_is_delivered_after_it_recovers(
    tmp_path: Path,
) -> None:
    # A bound on each wait, not a speed claim: 1000 first tries, each retried with back-off,
    # take this 2-core machine 40-110 s (scripts/chaos.py --scenario storm prints the times).
    result = run_storm(tmp_path / "storm", devices=1000, timeout=STORM_WAIT_S)
    assert result.sent == 1000
    # The channel failed for every alarm before it recovered.
    assert result.checks["all_refused_once"] == 1, result
    assert result.checks["refused"] >= result.sent, result
    assert_nothing_lost(result)
    assert result.duplicated == 0, result
