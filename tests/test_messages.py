"""What recipients read: kind, defender, time in UTC and local zone, position or "no fix", for
every event in every shipped language; SMS lengths; fallbacks to English."""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import string
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.messages import (
    EVENTS_WITHOUT_POSITION,
    PUBLIC_SAFE_EVENTS,
    SMS_LIMITS,
    TEXTS_DIR,
    AlarmFacts,
    MessageCatalog,
    MessageEvent,
    MessageFacts,
    RenderedMessage,
    available_languages,
    osm_link,
    render,
    render_alarm,
    render_rejected,
    sms_segments,
    texts,
)

MOMENT = datetime(2026, 3, 1, 14, 5, 9, tzinfo=UTC)
LATER = datetime(2026, 3, 1, 14, 20, 0, tzinfo=UTC)
LANGUAGES = ["en", "es", "ru"]
EVENTS = list(MessageEvent)
ACK_URL = "https://hub.example.org/ack/" + "Zq3_x-9" * 3 + "Abc"  # token_urlsafe(18): 24 chars
LEFTOVER = re.compile(r"\{[^}]*\}")
MAP = osm_link(43.3178, 45.6982)


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


def full_facts(**overrides: object) -> MessageFacts:
    """Every optional fact given, as the hub would for the event that needs it."""
    values: dict[str, object] = dict(
        at=LATER,
        actor="Front Line HQ",
        distance_m=1234,
        reason="checked by phone",
        stage="trusted contacts",
        interval_s=300,
        channel="alarm",
    )
    values.update(overrides)
    return facts(**values)


NO_FIX = dict(lat=None, lon=None, accuracy_m=None, fix_ts=None)


def every_text(message: RenderedMessage) -> str:
    return "\n".join([message.title, message.body, message.short])


# -- the alarm, as before --------------------------------------------------------------------


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


# -- the language files -------------------------------------------------------------------------


def raw(language: str) -> dict[str, dict[str, str]]:
    return tomllib.loads((TEXTS_DIR / f"{language}.toml").read_text(encoding="utf-8"))


def fields(template: str) -> set[tuple[str, str]]:
    parsed = string.Formatter().parse(template)
    return {(name, spec or "") for _, name, spec, _ in parsed if name is not None}


def test_english_russian_and_spanish_are_shipped() -> None:
    assert available_languages() == LANGUAGES


def test_english_has_a_section_for_every_event() -> None:
    assert {event.value for event in MessageEvent} <= set(raw("en"))
    assert all(set(raw("en")[event]) == {"title", "body", "short"} for event in MessageEvent)


@pytest.mark.parametrize("language", ["es", "ru"])
def test_language_file_has_exactly_the_english_sections_and_keys(language: str) -> None:
    english, local = raw("en"), raw(language)
    assert local.keys() == english.keys()
    for section, keys in english.items():
        assert local[section].keys() == keys.keys(), section


@pytest.mark.parametrize("language", ["es", "ru"])
def test_translated_templates_use_the_english_placeholders(language: str) -> None:
    english, local = raw("en"), raw(language)
    for section, keys in english.items():
        for key, template in keys.items():
            assert fields(local[section][key]) == fields(template), f"[{section}] {key}"
    assert MessageCatalog().problems(language) == []


# -- every event, every language ---------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("kind", ["panic", "removal", "duress", "fall", "test", "", "odd"])
def test_every_event_renders_in_every_language_without_leftover_placeholders(
    language: str, event: MessageEvent, kind: str
) -> None:
    for given in (
        full_facts(kind=kind),
        facts(kind=kind, **NO_FIX),
        facts(kind=kind, battery=None),
    ):
        message = render(event, given, language)
        assert message.language == language
        assert message.title and message.body.strip() and message.short
        assert not LEFTOVER.search(every_text(message)), every_text(message)
        assert "\n" not in message.title + message.short
        assert message.body.endswith("\n") and not message.body.startswith("\n")


def test_events_are_accepted_by_name() -> None:
    assert render("verified", full_facts(), "en") == render(
        MessageEvent.VERIFIED, full_facts(), "en"
    )


def test_an_unknown_event_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown message event 'alarm_sent': use one of alarm, "):
        render("alarm_sent", full_facts(), "en")


@pytest.mark.parametrize("event", EVENTS)
def test_unknown_language_falls_back_to_english_for_every_event(event: MessageEvent) -> None:
    english, unknown = render(event, full_facts(), "en"), render(event, full_facts(), "xx")
    assert dataclasses.replace(unknown, language="en") == english


def test_alarm_facts_is_still_the_name_old_callers_use() -> None:
    assert AlarmFacts is MessageFacts
    assert render_alarm(facts(), "ru") == render(MessageEvent.ALARM, facts(), "ru")


# -- position ----------------------------------------------------------------------------------

EVENTS_WITH_POSITION = [event for event in EVENTS if event not in EVENTS_WITHOUT_POSITION]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", EVENTS_WITH_POSITION)
def test_position_comes_with_coordinates_accuracy_and_map_link(
    language: str, event: MessageEvent
) -> None:
    message = render(event, full_facts(), language)
    accuracy = texts(language)["accuracy"]["known"].format(metres=12.4)
    assert f"43.31780, 45.69820 ({accuracy}" in message.body
    assert MAP in message.body and MAP in message.short


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", EVENTS_WITH_POSITION)
def test_without_a_fix_every_event_with_a_position_says_so(
    language: str, event: MessageEvent
) -> None:
    table = texts(language)["position"]
    message = render(event, full_facts(**NO_FIX), language)
    assert table["none"] in message.body and table["none_short"] in message.short
    assert "openstreetmap" not in every_text(message)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", sorted(EVENTS_WITHOUT_POSITION))
def test_closing_events_and_refusals_carry_no_position(language: str, event: MessageEvent) -> None:
    text = every_text(render(event, full_facts(), language))
    assert "openstreetmap" not in text and "43.31780" not in text


def test_alarm_short_form_gives_coordinates_and_accuracy_in_gsm7() -> None:
    short = render_alarm(facts(), "en").short
    assert f"43.31780,45.69820 within 12 m {MAP}" in short


def test_unknown_accuracy_is_said_not_shown_as_zero() -> None:
    message = render_alarm(facts(accuracy_m=None), "en")
    assert "accuracy unknown" in message.body and "±0" not in message.body


# -- times ---------------------------------------------------------------------------------------


def test_event_time_and_alarm_time_are_both_shown_in_utc_and_local_zone() -> None:
    message = render(MessageEvent.ACKNOWLEDGED, full_facts(), "en")
    assert (
        "Acknowledged: 2026-03-01 14:20:00 UTC (2026-03-01 17:20:00 Europe/Moscow)" in message.body
    )
    assert "Alarm raised: 2026-03-01 14:05:09 UTC" in message.body


def test_the_event_time_defaults_to_the_device_time() -> None:
    assert "Acknowledged: 2026-03-01 14:05:09 UTC" in render("acknowledged", facts(), "en").body


@pytest.mark.parametrize(
    ("language", "short_time"),
    [("en", "2026-03-01 14:05 UTC"), ("ru", "01.03 14:05 UTC"), ("es", "01/03 14:05 UTC")],
)
def test_short_times_use_the_languages_own_date_format(language: str, short_time: str) -> None:
    assert short_time in render_alarm(facts(), language).short


# -- event details -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "metres", "phrase"),
    [
        ("en", 1234, "1.2 km from you"),
        ("en", 348, "350 m from you"),
        ("en", 3, "10 m from you"),
        ("en", 12_600, "13 km from you"),
        ("ru", 1234, "в 1,2 км от вас"),
        ("es", 1234, "a 1,2 km de usted"),
    ],
)
def test_nearby_responder_is_told_how_far_the_alarm_is(
    language: str, metres: float, phrase: str
) -> None:
    message = render(MessageEvent.ALARM_NEARBY, full_facts(distance_m=metres), language)
    assert phrase in message.title and phrase in message.body and phrase in message.short
    assert MAP in message.body and MAP in message.short


def test_nearby_alarm_with_no_distance_says_it_is_unknown() -> None:
    message = render(MessageEvent.ALARM_NEARBY, full_facts(distance_m=None), "en")
    assert "at an unknown distance from you" in message.title


def test_nearby_responder_is_not_shown_the_device_or_its_battery() -> None:
    text = every_text(render(MessageEvent.ALARM_NEARBY, full_facts(device_id="wb-7731"), "en"))
    assert "wb-7731" not in text and "55%" not in text


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (MessageEvent.ACKNOWLEDGED, "Front Line HQ is on it"),
        (MessageEvent.VERIFIED, "Verified by Front Line HQ at 2026-03-01 14:20:00 UTC"),
        (MessageEvent.RESOLVED, "closed by Front Line HQ"),
        (MessageEvent.FALSE_ALARM, "Reason: checked by phone"),
        (MessageEvent.REMINDER, "Escalation stage: trusted contacts"),
        (MessageEvent.DEVICE_SILENT, "Expected to report every: 5 min"),
        (MessageEvent.DEVICE_SILENT, "Last heard from: 2026-03-01 14:05:09 UTC"),
        (MessageEvent.DEVICE_OFFLINE, "Offline since: 2026-03-01 14:20:00 UTC"),
        (MessageEvent.LOW_BATTERY, "is low: 55%"),
        (MessageEvent.LOCATION_UPDATE, "Received: 2026-03-01 14:20:00 UTC"),
        (MessageEvent.REJECTED, "Topic channel: alarm"),
    ],
)
def test_each_event_says_what_happened(event: MessageEvent, expected: str) -> None:
    assert expected in render(event, full_facts(), "en").body


def test_details_not_given_are_named_as_missing() -> None:
    bare = facts(at=LATER)
    assert "(name not given) is on it" in render("acknowledged", bare, "en").body
    assert "Expected to report every: unknown" in render("device_silent", bare, "en").body
    assert "Reason: none given" in render("false_alarm", bare, "en").body


def test_reporting_interval_is_given_in_sensible_units() -> None:
    def interval(seconds: int) -> str:
        body = render("device_silent", full_facts(interval_s=seconds), "en").body
        return body.split("Expected to report every: ")[1].split("\n")[0]

    assert [interval(s) for s in (30, 119, 300, 5400, 21600)] == [
        "30 s",
        "119 s",
        "5 min",
        "90 min",
        "6 h",
    ]


def test_refused_message_report_still_renders_from_the_old_call() -> None:
    message = render_rejected("R3", None, None, "not registered", LATER, "en")
    assert message.title == "Refused message from ?"
    assert "Reason: not registered" in message.body and "Reference: R3" in message.body
    assert "Topic channel: unknown" in message.body and "2026-03-01 14:20:00 UTC" in message.body
    assert message.short == "Natalia: refused message from ? (not registered) ref R3"


# -- acknowledgement link ------------------------------------------------------------------------

ACK_LINES = {
    "en": "Acknowledge (I'm on it): ",
    "ru": "Подтвердить («Беру на себя»): ",
    "es": "Confirme que se hace cargo («Me encargo»): ",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", EVENTS)
def test_ack_link_ends_the_message_only_when_given(language: str, event: MessageEvent) -> None:
    with_link = render(event, full_facts(ack_url=ACK_URL), language)
    assert with_link.body.rstrip("\n").splitlines()[-1] == ACK_LINES[language] + ACK_URL
    assert with_link.short.endswith(ACK_URL)
    without = render(event, full_facts(), language)
    assert "/ack/" not in every_text(without) and ACK_LINES[language] not in without.body
    assert with_link.body.startswith(without.body)


# -- what may become public ----------------------------------------------------------------------

BATTERY_WORDS = {"en": "battery", "ru": "заряд", "es": "batería"}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", sorted(PUBLIC_SAFE_EVENTS))
@pytest.mark.parametrize("kind", ["panic", "duress", "removal", "fall"])
def test_public_facing_texts_show_no_device_id_and_no_battery(
    language: str, event: MessageEvent, kind: str
) -> None:
    text = every_text(
        render(event, full_facts(kind=kind, device_id="wb-7731", battery=37), language)
    )
    assert "wb-7731" not in text and "37%" not in text
    assert BATTERY_WORDS[language] not in text.lower()


DURESS_WORDS = {"en": "DURESS", "ru": "ПРИНУЖДЕНИЕ", "es": "COACCIÓN"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_duress_alarm_is_an_ordinary_alarm_marked_as_duress_for_hq(language: str) -> None:
    duress, panic = (
        render("alarm", facts(kind="duress"), language),
        render("alarm", facts(), language),
    )
    for part in ("title", "body", "short"):
        assert DURESS_WORDS[language] in getattr(duress, part)
        assert DURESS_WORDS[language] not in getattr(panic, part)
    assert duress.body.splitlines()[2:] == panic.body.splitlines()[2:]  # the same facts below


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", sorted(PUBLIC_SAFE_EVENTS))
def test_public_facing_texts_never_reveal_a_duress_alarm(
    language: str, event: MessageEvent
) -> None:
    duress = render(event, full_facts(kind="duress"), language)
    assert duress == render(event, full_facts(kind="panic"), language)


# -- tests ---------------------------------------------------------------------------------------

TEST_WORDS = {
    "en": ("TEST", "No action is needed", "no action needed"),
    "ru": ("ТЕСТ", "Ничего делать не нужно", "Ничего делать не нужно"),  # noqa: RUF001 (Cyrillic)
    "es": ("PRUEBA", "No hace falta hacer nada", "no hace falta hacer nada"),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_test_alarm_says_it_is_a_test_and_needs_no_action(language: str) -> None:
    marker, no_action, no_action_short = TEST_WORDS[language]
    message = render(MessageEvent.TEST, facts(kind="test"), language)
    assert marker in message.title and marker in message.short and marker in message.body
    assert no_action in message.body and no_action_short in message.short
    assert MAP in message.short


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_alarm_of_kind_test_is_rendered_as_a_test(language: str) -> None:
    test = facts(kind="test")
    assert render(MessageEvent.ALARM, test, language) == render(MessageEvent.TEST, test, language)


# -- SMS -----------------------------------------------------------------------------------------

#: A realistic long case: a 3-digit longitude, accuracy in hundreds of metres, a 20-character
#: name in the recipient's script, over 10 km away.
LONG_NAMES = {
    "en": "Natalia Estemirova V.",
    "ru": "Наталья Эстемирова В.",  # noqa: RUF001 (Cyrillic)
    "es": "María Fernanda López",
}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("kind", ["panic", "removal", "duress", "fall", "test"])
def test_short_form_fits_the_languages_sms_limit(
    language: str, event: MessageEvent, kind: str
) -> None:
    long_case = full_facts(
        kind=kind,
        defender=LONG_NAMES[language],
        lat=20.67597,
        lon=-103.3475,
        accuracy_m=150,
        distance_m=12_345,
        ref="A1234",
        battery=100,
    )
    limit = SMS_LIMITS[language]
    without = render(event, long_case, language).short
    with_link = render(event, dataclasses.replace(long_case, ack_url=ACK_URL), language).short
    assert sms_segments(without) <= limit.without_ack_link, (len(without), without)
    assert sms_segments(with_link) <= limit.with_ack_link, (len(with_link), with_link)


def test_english_short_form_is_gsm7_so_two_segments_hold_306_characters() -> None:
    short = render_alarm(full_facts(ack_url=ACK_URL), "en").short
    assert len(short) > 2 * 67  # would be 3+ segments in UCS-2
    assert sms_segments(short) == 2


def test_sms_segments_counts_gsm7_and_ucs2() -> None:
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("a" * 306) == 2 and sms_segments("a" * 307) == 3
    assert sms_segments("[" * 80) == 1 and sms_segments("[" * 81) == 2  # escaped: 2 each
    assert sms_segments("±" + "a" * 69) == 1 and sms_segments("±" + "a" * 70) == 2
    assert sms_segments("я" * 201) == 3 and sms_segments("я" * 202) == 4
    assert sms_segments("ñé¿¡ü") == 1 and sms_segments("á" * 71) == 2


# -- fallbacks -----------------------------------------------------------------------------------


@pytest.fixture
def texts_dir(tmp_path: Path) -> Path:
    """A copy of the shipped texts to change; the repository is never written."""
    directory = tmp_path / "messages"
    shutil.copytree(TEXTS_DIR, directory)
    return directory


def without_line(path: Path, line: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert line in text
    path.write_text(text.replace(line, "", 1), encoding="utf-8")


def test_a_key_missing_from_a_language_falls_back_to_english_for_that_key_only(
    texts_dir: Path,
) -> None:
    without_line(texts_dir / "es.toml", 'title = "ALARMA {kind_label}: {defender}"\n')
    catalog = MessageCatalog(texts_dir)
    message = catalog.render(MessageEvent.ALARM, facts(), "es")
    assert message.title == "ALARM PÁNICO (tirón de la pulsera): Natalia E."
    assert message.body == render_alarm(facts(), "es").body
    assert message.short == render_alarm(facts(), "es").short
    assert catalog.problems("es") == ["[alarm] title is missing (English is used)"]


def test_a_broken_translation_falls_back_to_english_and_is_logged(
    texts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = texts_dir / "ru.toml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            'title = "ТРЕВОГА: {defender} — {kind_label}"', 'title = "ТРЕВОГА: {имя}"'
        ),
        encoding="utf-8",
    )
    catalog = MessageCatalog(texts_dir)
    with caplog.at_level(logging.WARNING, logger="hub.messages"):
        message = catalog.render(MessageEvent.ALARM, facts(), "ru")
    assert message.title == "ALARM ТРЕВОЖНАЯ КНОПКА (рывок браслета): Natalia E."
    assert message.short == render_alarm(facts(), "ru").short
    assert "ru.toml [alarm] title is broken" in caplog.text
    assert catalog.problems("ru") == [
        "[alarm] title uses [('имя', '')], English uses [('defender', ''), ('kind_label', '')]"
    ]


def test_an_unreadable_language_file_gives_english(
    texts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (texts_dir / "ru.toml").write_text("[alarm\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="hub.messages"):
        message = MessageCatalog(texts_dir).render(MessageEvent.ALARM, facts(), "ru")
    assert dataclasses.replace(message, language="en") == render_alarm(facts(), "en")
    assert "ru.toml is unreadable" in caplog.text


def test_problems_names_stray_sections_and_keys(texts_dir: Path) -> None:
    with (texts_dir / "es.toml").open("a", encoding="utf-8") as file:
        file.write('\n[extra]\nkey = "x"\n')
    path = texts_dir / "es.toml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("[kinds]\n", '[kinds]\nsos = "SOS"\n', 1),
        encoding="utf-8",
    )
    assert MessageCatalog(texts_dir).problems("es") == [
        "[extra] is not an English section",
        "[kinds] sos is not an English key",
    ]


def test_a_new_language_is_a_new_file(texts_dir: Path) -> None:
    (texts_dir / "fr.toml").write_text(
        '[alarm]\ntitle = "ALERTE {kind_label} : {defender}"\n', encoding="utf-8"
    )
    catalog = MessageCatalog(texts_dir)
    assert catalog.languages() == ["en", "es", "fr", "ru"]
    message = catalog.render(MessageEvent.ALARM, facts(), "fr")
    assert message.title == "ALERTE PANIC (wristband pulled) : Natalia E."
    assert message.body == render_alarm(facts(), "en").body
