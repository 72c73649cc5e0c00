"""Render the text each recipient gets, per event and language: a title, a full body (e-mail,
chat, webhooks) and a short form (SMS).

API::

    render(event: MessageEvent | str, facts: MessageFacts, language: str) -> RenderedMessage
    MessageCatalog(directory).render(...)   # the same, with texts from another directory

Texts live in ``hub/messages/{language}.toml``, one file per language; adding a language is
adding a file (``en.toml`` says how). English is the reference: a language without a file gets
English, a key missing from a file falls back to the English key, and a template that fails to
render (a translation mistake) falls back to the English template and is logged — a message
about an alarm must never fail because of a translation. ``MessageCatalog.problems(language)``
lists what a language file gets wrong.

What every text does:

- A position comes as coordinates (5 decimals), accuracy in metres and an OpenStreetMap link,
  or says explicitly "no position fix"; closing events (resolved, false alarm, cancelled) and
  refused-message reports carry no position at all.
- Times are shown in UTC and in the defender's own zone.
- Texts that may reach the press and the public (``PUBLIC_SAFE_EVENTS``: verified, public and
  the closing events, which go to everyone told of the alarm) never show a device id or battery.
  Pass the organisation's public name as ``actor`` for them, never a staff member's.
- ``ack_url`` given: the body ends with an "I'm on it" line and the SMS with the link.
- Fund messages (``FUND_EVENTS``) give the request's reference (``F12``), purpose, amount and
  state; never a position, and never who decided (staff names stay in the audit trail).

Duress: a duress alarm is rendered as ``alarm`` (``kind="duress"``), so that nothing about the
event differs from a normal alarm. Its kind label ``[kinds] duress`` tells HQ and helpers that it
was raised silently and not to call the defender; ``{public_kind}`` for duress is the same words
as for a panic alarm, so a verified or public text never reveals that a duress code was used.
An ``alarm`` of kind ``test`` renders as the ``test`` event: a test never reads as a real alarm.

SMS limits (``SMS_LIMITS``): ``short`` must fit, for every event, with a position (3-digit
longitude, accuracy in hundreds of metres), a name of about 20 characters and a 52-character
acknowledgement link:

- English: 2 segments with the acknowledgement link (GSM-7: 2 x 153 characters; English texts
  use only GSM-7 characters, since one other character, even "±", makes the SMS UCS-2).
- Russian, Spanish: 3 segments without the link, 4 with it (UCS-2: 67 characters a segment, so
  201 and 268 characters; Cyrillic, and Spanish's á/í/ó/ú, are outside GSM-7).

The OpenStreetMap link alone takes about 85 characters; it stays in every short form that has a
position, because a map is what a helper needs first. Less urgent events (acknowledged, device
silent or offline, low battery, test) give only the link, whose text shows the coordinates.
"""

from __future__ import annotations

import enum
import logging
import math
import string
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

TEXTS_DIR = Path(__file__).with_name("messages")
DEFAULT_LANGUAGE = "en"

Texts = dict[str, dict[str, str]]


class MessageEvent(enum.StrEnum):
    """What a message is about; each is a section of the language files."""

    ALARM = "alarm"  #: first message of an alarm (duress alarms too)
    ALARM_NEARBY = "alarm_nearby"  #: first message to a responder near the alarm
    REMINDER = "reminder"  #: repeat to a recipient who has not acknowledged
    LOCATION_UPDATE = "location_update"  #: new position, to those who acknowledged
    ACKNOWLEDGED = "acknowledged"  #: {actor} is on it
    VERIFIED = "verified"  #: HQ verified the alarm; also what the press gets
    PUBLIC = "public"  #: public broadcast
    RESOLVED = "resolved"
    FALSE_ALARM = "false_alarm"
    CANCELLED = "cancelled"  #: cancelled from the wristband with the cancel code
    DEVICE_SILENT = "device_silent"  #: no report within the expected interval
    DEVICE_OFFLINE = "device_offline"  #: the broker's last will for the device fired
    LOW_BATTERY = "low_battery"
    REJECTED = "rejected"  #: a refused message, reported to HQ
    REFUSED_BURST = "refused_burst"  #: one account's refusals of an interval, in one report
    TEST = "test"  #: a test alarm: no action needed
    FUND_SUBMITTED = "fund_submitted"  #: a request to the emergency fund was submitted
    FUND_UPDATED = "fund_updated"  #: a fund request was changed before review
    FUND_STATE = "fund_state"  #: a fund request moved in review: under review, a decision, paid


#: Events whose text may reach the press and the public: no device id, no battery.
PUBLIC_SAFE_EVENTS = frozenset(
    {
        MessageEvent.VERIFIED,
        MessageEvent.PUBLIC,
        MessageEvent.RESOLVED,
        MessageEvent.FALSE_ALARM,
        MessageEvent.CANCELLED,
    }
)
#: Messages about the emergency fund: a request's purpose, amount and state, never a position.
FUND_EVENTS = frozenset(
    {MessageEvent.FUND_SUBMITTED, MessageEvent.FUND_UPDATED, MessageEvent.FUND_STATE}
)
#: Events that say nothing about a position (the alarm is over, there is no defender, or the
#: message is about the fund).
EVENTS_WITHOUT_POSITION = frozenset(
    {
        MessageEvent.RESOLVED,
        MessageEvent.FALSE_ALARM,
        MessageEvent.CANCELLED,
        MessageEvent.REJECTED,
        MessageEvent.REFUSED_BURST,
    }
    | FUND_EVENTS
)


class SmsLimit(NamedTuple):
    """Most SMS segments a short form may take (see the module docstring)."""

    without_ack_link: int
    with_ack_link: int


#: Per shipped language; a new language should state its own.
SMS_LIMITS = {"en": SmsLimit(2, 2), "es": SmsLimit(3, 4), "ru": SmsLimit(3, 4)}


@dataclass(frozen=True)
class RenderedMessage:
    language: str  #: the language asked for (texts missing from it are English)
    title: str
    body: str  #: full form: e-mail, chat, webhooks
    short: str  #: SMS


@dataclass(frozen=True)
class MessageFacts:
    """What a message may say; built by the caller from the stored alarm, device or refusal.

    ``device_ts`` is the device's time: when the alarm was raised, or when a silent device was
    last heard from. ``at`` is when this event happened (default ``device_ts``).
    """

    ref: str
    kind: str
    defender: str
    timezone: str
    device_id: str
    device_ts: datetime
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    fix_ts: datetime | None
    battery: int | None
    at: datetime | None = None
    actor: str | None = None  #: who acknowledged, verified or closed it
    distance_m: float | None = None  #: a nearby responder's distance from the alarm
    reason: str | None = None
    stage: str | None = None  #: escalation stage name
    interval_s: int | None = None  #: a device's expected reporting interval
    channel: str | None = None
    ack_url: str | None = None  #: personal "I'm on it" link for this delivery
    purpose: str | None = None  #: a fund request's purpose (``sdk.models.FundPurpose`` value)
    state: str | None = None  #: a fund request's state (``sdk.models.FundState`` value)
    amount: str | None = None  #: a fund request's amount and currency, e.g. "1500.00 EUR"


#: The name callers used before there were events other than the alarm.
AlarmFacts = MessageFacts


class MessageCatalog:
    """The language files of one directory, loaded once each."""

    def __init__(self, directory: Path = TEXTS_DIR) -> None:
        self.directory = directory
        self._raw: dict[str, Texts] = {}
        self._merged: dict[str, Texts] = {}

    def languages(self) -> list[str]:
        return sorted(path.stem for path in self.directory.glob("*.toml"))

    def file_texts(self, language: str) -> Texts:
        """The language's own file as written (empty if absent or unreadable)."""
        if language not in self._raw:
            path = self.directory / f"{language}.toml"
            try:
                self._raw[language] = tomllib.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                self._raw[language] = {}
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                if language == DEFAULT_LANGUAGE:
                    raise
                log.warning("messages: %s is unreadable (%s); using English", path, exc)
                self._raw[language] = {}
        return self._raw[language]

    def texts(self, language: str) -> Texts:
        """The text table for ``language``, falling back to English key by key."""
        if language not in self._merged:
            english = self.file_texts(DEFAULT_LANGUAGE)
            local = self.file_texts(language) if language != DEFAULT_LANGUAGE else {}
            self._merged[language] = {
                section: {**keys, **_section(local, section)} for section, keys in english.items()
            }
        return self._merged[language]

    def problems(self, language: str) -> list[str]:
        """What the language's file gets wrong against English; empty when it is complete."""
        english, local = self.file_texts(DEFAULT_LANGUAGE), self.file_texts(language)
        if not local:
            return [f"{language}.toml is missing or unreadable"]
        found = [f"[{name}] is not an English section" for name in local if name not in english]
        for name, keys in english.items():
            own = _section(local, name)
            found += [f"[{name}] {key} is not an English key" for key in own if key not in keys]
            for key, template in keys.items():
                if key not in own:
                    found.append(f"[{name}] {key} is missing (English is used)")
                elif _fields(own[key]) != _fields(template):
                    found.append(
                        f"[{name}] {key} uses {sorted(_fields(own[key]))}, "
                        f"English uses {sorted(_fields(template))}"
                    )
        return found

    def render(
        self, event: MessageEvent | str, facts: MessageFacts, language: str
    ) -> RenderedMessage:
        """The message about ``event`` in ``language``, from ``facts``."""
        event = _event(event)
        if event is MessageEvent.ALARM and facts.kind == "test":
            event = MessageEvent.TEST
        fill = _Filler(self, language)
        values = _values(fill, facts, with_position=event not in EVENTS_WITHOUT_POSITION)
        section = event.value
        body = fill(section, "body", values).strip() + "\n"
        short = " ".join(fill(section, "short", values).split())
        if facts.ack_url:
            link = {"ack_url": facts.ack_url}
            body += "\n" + fill("ack", "line", link) + "\n"
            short += " " + fill("ack", "short", link)
        return RenderedMessage(language, fill(section, "title", values), body, short)


class _Filler:
    """Formats one template of one language, falling back to English if it is broken."""

    def __init__(self, catalog: MessageCatalog, language: str) -> None:
        self.catalog = catalog
        self.language = language
        self.table = catalog.texts(language)

    def __call__(self, section: str, key: str, values: dict[str, Any]) -> str:
        template = self.table[section][key]
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            if self.language == DEFAULT_LANGUAGE:
                raise
            log.warning(
                "messages: %s.toml [%s] %s is broken (%r); using English", self.language,
                section, key, exc,
            )  # fmt: skip
            return self.catalog.texts(DEFAULT_LANGUAGE)[section][key].format(**values)


def _values(fill: _Filler, facts: MessageFacts, *, with_position: bool) -> dict[str, Any]:
    """Every placeholder an event template may use (listed at the top of en.toml)."""
    table = fill.table
    zone = _zone(facts.timezone)
    at = _as_utc(facts.at or facts.device_ts)
    device_time = _as_utc(facts.device_ts)
    missing = table["missing"]
    values: dict[str, Any] = {
        "defender": facts.defender,
        "ref": facts.ref,
        "kind_label": table["kinds"].get(facts.kind, facts.kind.upper()),
        "kind_short": table["kinds_short"].get(facts.kind, facts.kind.upper()),
        "public_kind": table["public_kinds"].get(facts.kind, facts.kind),
        "timezone": zone.key,
        "device": facts.device_id,
        "battery": missing["battery"] if facts.battery is None else f"{facts.battery}%",
        "distance": _distance(fill, facts.distance_m),
        "interval": _interval(fill, facts.interval_s) or missing["interval"],
        "actor": facts.actor or missing["actor"],
        "reason": facts.reason or missing["reason"],
        "stage": facts.stage or missing["stage"],
        "channel": facts.channel or missing["channel"],
        "purpose": _label(table["fund_purposes"], facts.purpose) or missing["purpose"],
        "state": _label(table["fund_states"], facts.state) or missing["state"],
        "amount": facts.amount or missing["amount"],
        **_times("time", at, zone, table["formats"]["short_time"]),
        **_times("device_time", device_time, zone, table["formats"]["short_time"]),
    }
    values.update(_position(fill, facts if with_position else None))
    return values


def _position(fill: _Filler, facts: MessageFacts | None) -> dict[str, str]:
    if facts is None or facts.lat is None or facts.lon is None:
        none_short = fill("position", "none_short", {})
        return {
            "position": fill("position", "none", {}),
            "position_short": none_short,
            "map": fill("position", "map_none", {}),
            "map_short": none_short,
            "where_short": none_short,
        }
    if facts.accuracy_m is None:
        accuracy = fill("accuracy", "unknown", {})
        accuracy_short = fill("accuracy", "unknown_short", {})
    else:
        accuracy = fill("accuracy", "known", {"metres": facts.accuracy_m})
        accuracy_short = fill("accuracy", "known_short", {"metres": facts.accuracy_m})
    fix_time = _as_utc(facts.fix_ts).strftime("%H:%M:%S") if facts.fix_ts else "?"
    numbers = {"lat": facts.lat, "lon": facts.lon, "fix_time": fix_time}
    short = fill("position", "fix_short", {**numbers, "accuracy": accuracy_short})
    link = osm_link(facts.lat, facts.lon)
    return {
        "position": fill("position", "fix", {**numbers, "accuracy": accuracy}),
        "position_short": short,
        "map": link,
        "map_short": link,
        "where_short": f"{short} {link}",
    }


def _label(labels: dict[str, str], value: str | None) -> str:
    """The language's label for ``value``, or the value itself when it has none."""
    return labels.get(value, value) if value else ""


def _distance(fill: _Filler, metres: float | None) -> str:
    """'350 m' up to a kilometre (to 10 m), then '1.2 km', and whole kilometres from 10 km."""
    if metres is None or not math.isfinite(metres):
        return fill("distance", "unknown", {})
    if metres < 995:
        return fill("distance", "metres", {"metres": max(10, round(metres / 10) * 10)})
    km = f"{metres / 1000:.1f}" if metres < 9950 else f"{metres / 1000:.0f}"
    decimal_mark = fill.table["distance"]["decimal_mark"]
    return fill("distance", "kilometres", {"km": km.replace(".", decimal_mark)})


def _interval(fill: _Filler, seconds: int | None) -> str:
    """'90 s' below two minutes, '15 min' below two hours, then '3 h'; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 120:
        return fill("interval", "seconds", {"n": seconds})
    if seconds < 2 * 3600:
        return fill("interval", "minutes", {"n": round(seconds / 60)})
    return fill("interval", "hours", {"n": round(seconds / 3600)})


def _times(prefix: str, moment: datetime, zone: ZoneInfo, short_format: str) -> dict[str, str]:
    """Full times in UTC and in the defender's zone, and a short UTC time in the language's
    own format (SMS). Every instant the protocol accepts renders, in every zone (below)."""
    return {
        f"{prefix}_utc": _strftime(moment, FULL_TIME),
        f"{prefix}_local": _local_time(moment, zone),
        f"{prefix}_short": _strftime(moment, short_format),
    }


FULL_TIME = "%Y-%m-%d %H:%M:%S"
#: The Gregorian calendar repeats itself every 400 years, which are exactly this many days.
_GREGORIAN_CYCLE = timedelta(days=146_097)


def _local_time(moment: datetime, zone: ZoneInfo) -> str:
    """``moment`` on the wall clock of ``zone``. At the ends of the protocol's range the local
    date is outside what ``datetime`` holds (9999-12-31 23:00 UTC is year 10000 east of
    Greenwich; 0001-01-01 00:00 UTC is year 0 west of it): the time is then worked out 400
    years closer, where the calendar and the zone's rules are the same, and the year put back."""
    try:
        return _strftime(moment.astimezone(zone), FULL_TIME)
    except OverflowError:
        years = 400 if moment.year > 5000 else -400
        shifted = (moment - _GREGORIAN_CYCLE * (years // 400)).astimezone(zone)
        return _strftime(shifted, FULL_TIME, year=shifted.year + years)


def _strftime(moment: datetime, template: str, year: int | None = None) -> str:
    """``moment.strftime(template)`` with ``%Y`` always four digits (the C library writes year 1
    as "1"), and ``year`` instead of the moment's own when given."""
    year = moment.year if year is None else year
    return moment.strftime(template.replace("%Y", f"{year:04d}"))


def _event(event: MessageEvent | str) -> MessageEvent:
    try:
        return MessageEvent(event)
    except ValueError:
        known = ", ".join(member.value for member in MessageEvent)
        raise ValueError(f"unknown message event {event!r}: use one of {known}") from None


def _section(texts: Texts, name: str) -> dict[str, str]:
    section = texts.get(name)
    return section if isinstance(section, dict) else {}


def _fields(template: object) -> set[tuple[str, str]]:
    """The (placeholder, format spec) pairs of a template; a malformed one gives a marker."""
    if not isinstance(template, str):
        return {("<not a string>", "")}
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return {(f"<malformed: {exc}>", "")}
    return {(name, spec or "") for _, name, spec, _ in parsed if name is not None}


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def osm_link(lat: float, lon: float) -> str:
    return (
        f"https://www.openstreetmap.org/?mlat={lat:.5f}&mlon={lon:.5f}#map=17/{lat:.5f}/{lon:.5f}"
    )


_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")  # each takes two GSM-7 characters


def sms_segments(text: str) -> int:
    """How many SMS segments ``text`` takes: GSM-7 when every character allows, else UCS-2."""
    if all(char in _GSM7_BASIC or char in _GSM7_EXTENDED for char in text):
        units = len(text) + sum(char in _GSM7_EXTENDED for char in text)
        single, part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, part = 70, 67
    return 1 if units <= single else math.ceil(units / part)


DEFAULT_CATALOG = MessageCatalog()


def render(event: MessageEvent | str, facts: MessageFacts, language: str) -> RenderedMessage:
    """The message about ``event`` in ``language``, from the shipped texts."""
    return DEFAULT_CATALOG.render(event, facts, language)


def texts(language: str) -> Texts:
    """The shipped text table for ``language``, falling back to English key by key."""
    return DEFAULT_CATALOG.texts(language)


def available_languages() -> list[str]:
    return DEFAULT_CATALOG.languages()


def render_alarm(facts: AlarmFacts, language: str) -> RenderedMessage:
    """The first message of an alarm (kept for callers from before ``render``)."""
    return render(MessageEvent.ALARM, facts, language)


def render_rejected(
    ref: str, device_id: str | None, channel: str | None, reason: str, at: datetime, language: str
) -> RenderedMessage:
    """The report to HQ about a refused message (kept for callers from before ``render``)."""
    facts = MessageFacts(
        ref=ref, kind="", defender="", timezone="UTC", device_id=device_id or "?", device_ts=at,
        lat=None, lon=None, accuracy_m=None, fix_ts=None, battery=None, channel=channel,
        reason=reason,
    )  # fmt: skip
    return render(MessageEvent.REJECTED, facts, language)
