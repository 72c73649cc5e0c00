"""The Apprise notifier against a real SMTP server and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Iterator

import pytest

from hub.plugin_api import InvalidChannelURL, PluginError
from plugins.apprise_notifier import (
    APPRISE_LOGGER,
    AppriseNotifier,
    AppriseSettings,
    apprise_schemes,
    bound_timeouts,
    choose_text,
    load_service,
    natalia_notifiers,
    new_asset,
)
from plugins.testing import check_notifier, make_notification, registry_with
from tests.support.receivers import HTTPReceiver, SMTPReceiver

SECRET = "s3cret-pass-0123456789"


@pytest.fixture(autouse=True)
def apprise_logger_state() -> Iterator[logging.Logger]:
    """Each test may reconfigure the ``apprise`` logger; put it back afterwards."""
    log = logging.getLogger(APPRISE_LOGGER)
    saved = (log.level, log.propagate, log.disabled, list(log.handlers))
    yield log
    log.level, log.propagate, log.disabled = saved[:3]
    log.handlers[:] = saved[3]


def json_url(receiver: HTTPReceiver, path: str = "/alerts", auth: str = "") -> str:
    return f"json://{auth}127.0.0.1:{receiver.port}{path}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_email_reaches_the_smtp_server_with_the_title_as_subject(smtp_server: SMTPReceiver):
    note = make_notification(title="ALARM: Ana needs help", body="Ana at 4.60971,-74.08175.")

    result = asyncio.run(
        check_notifier(AppriseNotifier(), smtp_server.url("sister@example.org"), notification=note)
    )

    assert result.ok, result.detail
    (mail,) = smtp_server.messages
    assert mail.rcpt_tos == ["sister@example.org"]
    assert mail.message["Subject"] == "ALARM: Ana needs help"
    assert mail.text.strip() == "Ana at 4.60971,-74.08175."


def test_json_webhook_receives_the_exact_apprise_payload(http_receiver: HTTPReceiver):
    note = make_notification(title="ALARM", body="Ana needs help\nat 4.60971,-74.08175")

    result = asyncio.run(
        check_notifier(AppriseNotifier(), json_url(http_receiver), notification=note)
    )

    assert result.ok and result.detail == "sent via JSON"
    (request,) = http_receiver.requests
    assert (request.method, request.path) == ("POST", "/alerts")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "version": "1.0",
        "title": "ALARM",
        "message": "Ana needs help\nat 4.60971,-74.08175",
        "attachments": [],
        "type": "info",
    }


def test_a_server_error_is_a_retryable_failure_with_the_status_and_no_secret(
    http_receiver: HTTPReceiver,
):
    http_receiver.default = (500, b'{"error": "down"}')
    url = json_url(http_receiver, auth=f"natalia:{SECRET}@")

    result = asyncio.run(check_notifier(AppriseNotifier(), url))

    assert not result.ok and not result.permanent
    assert result.detail.startswith("JSON: ") and "500" in result.detail
    assert SECRET not in result.detail


def test_an_unreachable_endpoint_is_a_retryable_failure_that_says_so():
    url = f"json://natalia:{SECRET}@127.0.0.1:{closed_port()}/alerts"

    result = asyncio.run(check_notifier(AppriseNotifier(), url))

    assert not result.ok and not result.permanent
    assert "connection error" in result.detail.lower()
    assert SECRET not in result.detail


def test_a_url_apprise_rejects_fails_validation_and_is_a_permanent_failure():
    url = "tgram://s3cr3t-bot-token-value/"
    notifier = AppriseNotifier()

    with pytest.raises(InvalidChannelURL) as refused:
        notifier.validate(url)
    result = asyncio.run(notifier.send(make_notification(url=url)))

    assert "s3cr3t-bot-token-value" not in str(refused.value)
    assert "tgram://" in str(refused.value)
    assert not result.ok and result.permanent
    assert "s3cr3t-bot-token-value" not in result.detail


def test_a_service_that_cannot_run_on_this_hub_says_why():
    with pytest.raises(InvalidChannelURL, match="Windows"):
        AppriseNotifier().validate("windows://")


def test_concurrent_failures_each_report_their_own_reason():
    broken, missing = HTTPReceiver(default=(500, b"{}")), HTTPReceiver(default=(404, b"{}"))
    for receiver in (broken, missing):
        receiver.delay = 0.5  # both answers arrive while the other send is still in flight
        receiver.start()
    notifier = AppriseNotifier()
    urls = [json_url(broken), json_url(missing)] * 3

    async def send_all():
        notes = [make_notification(url=url, delivery_id=i) for i, url in enumerate(urls)]
        return await asyncio.gather(*(notifier.send(note) for note in notes))

    try:
        results = asyncio.run(send_all())
    finally:
        broken.stop()
        missing.stop()

    for url, result in zip(urls, results, strict=True):
        own, other = ("500", "404") if url == json_url(broken) else ("404", "500")
        assert not result.ok
        assert own in result.detail and other not in result.detail, result.detail


def test_two_sends_to_a_throttled_service_run_side_by_side(http_receiver: HTTPReceiver):
    # ntfy throttles itself 5.5 s per instance; a shared instance would queue the second alarm.
    http_receiver.delay = 1.0
    url = f"ntfy://127.0.0.1:{http_receiver.port}/alarms"
    notifier = AppriseNotifier()

    overlapped, results = asyncio.run(send_side_by_side(notifier, http_receiver, [url, url]))

    assert all(result.ok for result in results), results
    assert overlapped


def test_more_alarms_than_apprise_has_shared_threads_are_all_sent_at_once(
    http_receiver: HTTPReceiver,
):
    # Apprise's process-wide pool has min(32, CPUs + 4) threads; alarms must not queue for it.
    http_receiver.delay = 2.0
    count = min(32, (os.cpu_count() or 1) + 4) + 2
    urls = [json_url(http_receiver, f"/alerts/{i}") for i in range(count)]

    overlapped, results = asyncio.run(send_side_by_side(AppriseNotifier(), http_receiver, urls))

    assert all(result.ok for result in results), results
    assert overlapped


async def send_side_by_side(notifier, receiver: HTTPReceiver, urls: list[str]):
    """Send to every URL at once; True if the receiver saw all requests before any send ended."""
    sends = [
        asyncio.create_task(notifier.send(make_notification(url=url, delivery_id=i)))
        for i, url in enumerate(urls)
    ]
    # The receiver records from its own threads: there is no event to await, so poll.
    while len(receiver.requests) < len(urls) and not any(send.done() for send in sends):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    overlapped = len(receiver.requests) == len(urls) and not any(send.done() for send in sends)
    return overlapped, await asyncio.gather(*sends)


def test_each_send_loads_its_own_service_without_throttle_and_with_bounded_timeouts():
    slow_url = "mailto://127.0.0.1:2525?from=alarms@natalia.test&to=a@example.org&cto=30&rto=30"
    quick_url = "mailto://127.0.0.1:2525?from=alarms@natalia.test&to=a@example.org&cto=2&rto=3"
    first, second = load_service(slow_url, new_asset()), load_service(slow_url, new_asset())
    quick = load_service(quick_url, new_asset())
    assert first is not second and first.request_rate_per_sec > 0  # e-mail throttles itself

    bound_timeouts(first, slow_url, 10.0)
    bound_timeouts(quick, quick_url, 10.0)

    assert first.request_rate_per_sec == 0
    assert (first.socket_connect_timeout, first.socket_read_timeout) == (10.0, 10.0)
    assert (quick.socket_connect_timeout, quick.socket_read_timeout) == (2.0, 3.0)


def test_a_slow_service_gives_up_within_the_configured_timeout(http_receiver: HTTPReceiver):
    # Apprise's own default read timeout (4 s) would outlast the hub's 3 s wait below.
    http_receiver.delay = 6.0
    notifier = AppriseNotifier(AppriseSettings(timeout=0.5))

    result = asyncio.run(
        asyncio.wait_for(notifier.send(make_notification(url=json_url(http_receiver))), 3.0)
    )

    assert not result.ok and not result.permanent
    assert result.detail.startswith("JSON: ")


def test_sms_services_get_the_short_text_and_e_mail_the_full_one():
    note = make_notification(title="ALARM", body="long body " * 20, short="ALARM Ana 4.6,-74.1")
    sms = load_service(
        "twilio://AC1234567890abcdef1234567890abcd:0123456789abcdef0123456789abcdef"
        "@15551234567/15557654321",
        new_asset(),
    )
    email = load_service("mailto://127.0.0.1:2525?from=a@natalia.test&to=b@x.org", new_asset())

    assert choose_text(sms, note) == ("", "ALARM Ana 4.6,-74.1")
    assert choose_text(email, note) == ("ALARM", note.body)


class _RootRecords(logging.Handler):
    """What the hub's own log handlers (attached to the root logger) would receive."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_apprise_records_stay_out_of_the_hub_logs(
    http_receiver: HTTPReceiver, apprise_logger_state: logging.Logger
):
    # A hub configured "verbose" would otherwise log payloads with coordinates and addresses.
    # (pytest's caplog attaches itself to non-propagating loggers too, so it cannot show this;
    # a handler on the root logger sees exactly what the hub's log handlers would.)
    apprise_logger_state.setLevel(logging.DEBUG)
    apprise_logger_state.propagate = True
    root = logging.getLogger()
    hub_log = _RootRecords()
    root.addHandler(hub_log)
    saved_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        notifier = AppriseNotifier()
        http_receiver.responses.append((500, b"{}"))
        url = json_url(http_receiver, auth=f"u:{SECRET}@")

        async def send_twice():
            return [await notifier.send(make_notification(url=url)) for _ in range(2)]

        failed, sent = asyncio.run(send_twice())
    finally:
        root.removeHandler(hub_log)
        root.setLevel(saved_level)

    assert not failed.ok and "500" in failed.detail  # the reason still reaches HQ
    assert sent.ok
    assert [r for r in hub_log.records if r.name.startswith(APPRISE_LOGGER)] == []
    assert not any("4.60971" in r.getMessage() for r in hub_log.records)
    assert apprise_logger_state.level == logging.WARNING
    assert apprise_logger_state.propagate is False


def test_schemes_are_every_apprise_scheme_except_those_of_other_builtins():
    schemes = AppriseNotifier().schemes

    assert {
        "mailto",
        "mailtos",
        "json",
        "tgram",
        "x",
        "twitter",
        "ntfy",
        "matrix",
        "signal",
        "twilio",
    } <= set(schemes)
    assert "console" not in schemes and "facebook" not in schemes


def test_the_hub_routes_apprise_urls_to_apprise_and_other_builtins_to_theirs():
    registry = registry_with()

    assert registry.for_url("mailto://u:p@example.org").name == "apprise"
    assert registry.for_url("facebook://token@123").name == "facebook"
    assert registry.for_url("console://").name == "console"


def test_excluded_schemes_are_left_to_another_plugin():
    (notifier,) = natalia_notifiers(settings={"apprise": {"exclude_schemes": ["Signal"]}})

    assert "signal" not in notifier.schemes
    assert apprise_schemes(exclude=["signal"]) == set(notifier.schemes)


@pytest.mark.parametrize(
    "table",
    [
        {"timout": 5},
        {"timeout": 0},
        {"timeout": "10"},
        {"max_workers": 0},
        {"exclude_schemes": "signal"},
    ],
)
def test_a_wrong_setting_stops_the_hub_with_a_message(table):
    with pytest.raises(PluginError, match=r"\[plugins.apprise\]"):
        natalia_notifiers(settings={"apprise": table})
