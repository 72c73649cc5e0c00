"""Acknowledgement links expire once their alarm is closed and the grace period has passed, and
guessing them is rate-limited per client address: the real hub, its web server, real SMTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from hub.clock import FakeClock
from tests.support.scene import Scene

POLICY = """
[[stages]]
name = "first"
roles = ["hq", "trusted"]
"""


@pytest.fixture
def scene(broker, smtp_server, http_receiver, tmp_path) -> Iterator[Scene]:
    stage = Scene.with_hq(broker, smtp_server, http_receiver, tmp_path, POLICY)
    stage.contact("Sister", "sister@example.org")
    stage.config.http.ack_link_grace_s = 600
    stage.config.http.ack_link_misses = 5
    stage.config.http.ack_link_misses_window_s = 900
    try:
        yield stage
    finally:
        stage.close()


def test_a_link_works_while_its_alarm_is_open_says_closed_for_the_grace_then_not_at_all(
    scene: Scene,
) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    [link] = scene.ack_links("sister@example.org", alarm)
    scene.advance(3 * 24 * 3600)
    assert httpx.get(link).status_code == 200  # an open alarm's link never expires
    scene.actions.resolve(f"A{alarm.id}", "duty officer")
    scene.advance(599)

    answer = httpx.post(link)
    assert answer.status_code == 200 and "already closed (resolved)" in answer.text
    scene.advance(2)  # 601 s after the close: past [http] ack_link_grace_s
    assert httpx.get(link).status_code == 404
    answer = httpx.post(link)
    assert answer.status_code == 404 and "not valid" in answer.text
    assert scene.fresh(alarm).acknowledged_at is None


def test_guessing_links_gets_429_for_the_window_and_only_the_button_acknowledges(
    scene: Scene,
) -> None:
    scene.start()
    alarm = scene.alarm()
    scene.settle()
    [link] = scene.ack_links("sister@example.org", alarm)
    base = link.rsplit("/", 1)[0]

    guesses = [httpx.get(f"{base}/guess{n}").status_code for n in range(5)]
    refused = httpx.get(f"{base}/guess5")
    also_refused = httpx.post(link)  # while refused, nothing is looked up, a real link neither

    assert guesses == [404] * 5
    assert refused.status_code == also_refused.status_code == 429
    assert "Too many links that do not work" in refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 900
    assert scene.fresh(alarm).acknowledged_at is None
    scene.advance(900)  # the window has passed
    page = httpx.get(link)
    assert page.status_code == 200 and "I'm on it" in page.text
    assert scene.fresh(alarm).acknowledged_at is None  # a preview (GET) acknowledges nothing
    assert httpx.post(link).status_code == 200
    assert scene.fresh(alarm).acknowledged_at is not None


def test_misses_are_counted_per_address_and_per_ipv6_64() -> None:
    from hub.acklinks import GuessLimiter

    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    limiter = GuessLimiter(3, timedelta(minutes=10), clock, max_addresses=3)
    for address in ("2001:db8::1", "2001:db8::2", "2001:db8::ffff"):  # one /64
        limiter.miss(address)

    assert limiter.wait_s("2001:db8::9") == 600
    assert limiter.wait_s("2001:db8:0:1::1") == 0  # the next /64
    assert limiter.wait_s("192.0.2.1") == 0
    clock.advance(600)
    assert limiter.wait_s("2001:db8::9") == 0
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        limiter.miss(address)
    assert len(limiter._misses) == 3  # bounded: the oldest address is forgotten first
