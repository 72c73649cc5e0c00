"""Render the text each recipient gets: a full form (e-mail, chat) and a short one (SMS).

Texts live in ``hub/messages/{language}.toml``; a recipient whose language has no file gets
English. Times are shown in UTC and in the defender's own zone; a position always comes with
its accuracy and an OpenStreetMap link, or an explicit "no position fix".
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_TEXTS = Path(__file__).with_name("messages")
DEFAULT_LANGUAGE = "en"


@dataclass(frozen=True)
class RenderedMessage:
    language: str
    title: str
    body: str
    short: str


@dataclass(frozen=True)
class AlarmFacts:
    """What a message says about an alarm; built from the stored row."""

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


@functools.cache
def texts(language: str) -> dict[str, Any]:
    """The text table for ``language``, falling back to English key by key."""
    english = tomllib.loads((_TEXTS / f"{DEFAULT_LANGUAGE}.toml").read_text())
    path = _TEXTS / f"{language}.toml"
    if language == DEFAULT_LANGUAGE or not path.exists():
        return english
    local = tomllib.loads(path.read_text())
    return {section: {**english[section], **local.get(section, {})} for section in english}


def available_languages() -> list[str]:
    return sorted(path.stem for path in _TEXTS.glob("*.toml"))


def osm_link(lat: float, lon: float) -> str:
    return (
        f"https://www.openstreetmap.org/?mlat={lat:.5f}&mlon={lon:.5f}#map=17/{lat:.5f}/{lon:.5f}"
    )


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def render_alarm(facts: AlarmFacts, language: str) -> RenderedMessage:
    table = texts(language)
    moment = _as_utc(facts.device_ts)
    zone = _zone(facts.timezone)
    if facts.lat is not None and facts.lon is not None:
        fix_time = _as_utc(facts.fix_ts).strftime("%H:%M:%S") if facts.fix_ts else "?"
        numbers = {"lat": facts.lat, "lon": facts.lon, "accuracy": facts.accuracy_m or 0.0}
        position = table["position"]["fix"].format(**numbers, fix_time=fix_time)
        position_short = table["position"]["fix_short"].format(**numbers)
        map_link = osm_link(facts.lat, facts.lon)
    else:
        position = table["position"]["none"]
        position_short = table["position"]["none_short"]
        map_link = table["position"]["map_none"]
    values = {
        "kind_label": table["kinds"].get(facts.kind, facts.kind.upper()),
        "defender": facts.defender,
        "time_utc": moment.strftime("%Y-%m-%d %H:%M:%S"),
        "time_local": moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        "timezone": zone.key,
        "position": position,
        "position_short": position_short,
        "map": map_link,
        "device": facts.device_id,
        "battery": f"{facts.battery}%"
        if facts.battery is not None
        else table["position"]["battery_unknown"],
        "ref": facts.ref,
    }
    return _render(table["alarm"], values, language)


def render_rejected(
    ref: str, device_id: str | None, channel: str | None, reason: str, at: datetime, language: str
) -> RenderedMessage:
    table = texts(language)
    values = {
        "device": device_id or "?",
        "channel": channel or "?",
        "reason": reason,
        "ref": ref,
        "time_utc": _as_utc(at).strftime("%Y-%m-%d %H:%M:%S"),
    }
    return _render(table["rejected"], values, language)


def _render(section: dict[str, str], values: dict[str, Any], language: str) -> RenderedMessage:
    return RenderedMessage(
        language=language,
        title=section["title"].format(**values),
        body=section["body"].strip().format(**values) + "\n",
        short=section["short"].format(**values),
    )
