"""What recipients read: kind, defender, time in UTC and local zone, position or "no fix"."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.messages import AlarmFacts, available_languages, osm_link, render_alarm

MOMENT = datetime(2026, 3, 1, 14, 5, 9, tzinfo=UTC)


def facts(**overrides: object) -> AlarmFacts:
    values: dict[str, object] = dict(
        ref="A7",
        kind="panic",
        defender="Natalia E.",
        timezone="Europe/Moscow",
        device_id="wb-1",
        device_ts=MOMENT,
        lat=43.3178,
        lon=45.6982,
        accuracy_m=12.4,
        fix_ts=MOMENT,
        battery=55,
    )
    values.update(overrides)
    return AlarmFacts(**values)  # type: ignore[arg-type]


def test_alarm_message_has_kind_name_times_position_accuracy_and_map() -> None:
    message = render_alarm(facts(), "en")
    assert message.title == "ALARM PANIC (wristband pulled): Natalia E."
    assert "Time: 2026-03-01 14:05:09 UTC (2026-03-01 17:05:09 Europe/Moscow)" in message.body
    assert "Position: 43.31780, 45.69820 (accuracy ±12 m, fix at 14:05:09 UTC)" in message.body
    assert f"Map: {osm_link(43.3178, 45.6982)}" in message.body
    assert "battery 55%" in message.body and "Reference: A7" in message.body


def test_alarm_without_fix_says_no_position_fix_everywhere() -> None:
    message = render_alarm(facts(lat=None, lon=None, accuracy_m=None, fix_ts=None), "en")
    assert "no position fix" in message.body
    assert "no GPS fix" in message.short
    assert "openstreetmap" not in message.body + message.short


def test_short_form_fits_two_sms_and_keeps_the_map_link() -> None:
    message = render_alarm(facts(), "en")
    assert len(message.short) <= 2 * 153
    assert osm_link(43.3178, 45.6982) in message.short


def test_unknown_language_falls_back_to_english() -> None:
    assert render_alarm(facts(), "xx").title == render_alarm(facts(), "en").title
    assert "en" in available_languages()


def test_unknown_time_zone_is_shown_as_utc() -> None:
    assert "(2026-03-01 14:05:09 UTC)" in render_alarm(facts(timezone="Mars/Olympus"), "en").body


def test_osm_link_points_at_the_position() -> None:
    assert osm_link(-33.9, 18.4) == (
        "https://www.openstreetmap.org/?mlat=-33.90000&mlon=18.40000#map=17/-33.90000/18.40000"
    )
