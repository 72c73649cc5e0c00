"""Every instant the protocol accepts renders, in every time zone and language (issue 11, item 2).

The protocol accepts any time from 0001-01-01 00:00 to 9999-12-31 23:59:59.999999 UTC. Shown on
the wall clock of a zone east of Greenwich the last one is in year 10000, and the first one west
of it in year 0: neither is a Python ``datetime``, and rendering them crashed the alarm path.
A device timestamp at either end is a genuine (if odd) alarm: it must render.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hub.messages import MessageEvent, MessageFacts, render
from tests.support.hypothesis import fuzz
from tests.test_messages import facts

FIRST = datetime(1, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
ZONES = sorted(available_timezones())
LANGUAGES = ["en", "es", "ru"]
#: Every instant the protocol accepts, once converted to UTC (as the hub stores it).
protocol_instants = st.datetimes(
    min_value=FIRST.replace(tzinfo=None), max_value=LAST.replace(tzinfo=None)
).map(lambda moment: moment.replace(tzinfo=UTC))


def facts_at(moment: datetime, zone: str) -> MessageFacts:
    return facts(timezone=zone, device_ts=moment, fix_ts=moment, at=moment)


def wall_clock(moment: datetime, zone: str) -> str:
    """The local time as the text shows it (four-digit year), where ``datetime`` can hold it."""
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local.year:04d}" + local.strftime("-%m-%d %H:%M:%S")


@pytest.mark.parametrize("moment", [FIRST, LAST], ids=["year-1", "year-9999"])
def test_the_ends_of_the_protocols_range_render_in_every_zone(moment: datetime) -> None:
    for zone in ZONES:
        message = render(MessageEvent.ALARM, facts_at(moment, zone), "en")
        assert moment.strftime("%H:%M:%S") in message.body, zone


def test_the_last_instant_east_of_greenwich_is_shown_in_year_10000() -> None:
    message = render(MessageEvent.ALARM, facts_at(LAST, "Pacific/Kiritimati"), "en")
    assert "9999-12-31 23:59:59 UTC (10000-01-01 13:59:59 Pacific/Kiritimati)" in message.body


def test_the_first_instant_west_of_greenwich_is_shown_in_year_0() -> None:
    message = render(MessageEvent.ALARM, facts_at(FIRST, "America/New_York"), "en")
    # New York's local mean time before 1883: 4:56:02 behind Greenwich.
    assert "0001-01-01 00:00:00 UTC (0000-12-31 19:03:58 America/New_York)" in message.body


@fuzz(weight=2)
@given(
    moment=protocol_instants,
    zone=st.sampled_from(ZONES),
    event=st.sampled_from(list(MessageEvent)),
    language=st.sampled_from(LANGUAGES),
)
@example(moment=LAST, zone="Etc/GMT-14", event=MessageEvent.REMINDER, language="ru")
@example(moment=FIRST, zone="Etc/GMT+12", event=MessageEvent.RESOLVED, language="es")
def test_any_accepted_instant_renders_in_any_zone_with_the_right_local_time(
    moment: datetime, zone: str, event: MessageEvent, language: str
) -> None:
    message = render(event, facts_at(moment, zone), language)
    assert message.title and message.body and message.short
    english = render(MessageEvent.ALARM, facts_at(moment, zone), "en")
    if timedelta(days=2) < moment - FIRST and timedelta(days=2) < LAST - moment:
        assert f"({wall_clock(moment, zone)} {zone})" in english.body
