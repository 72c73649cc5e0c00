"""Responders: people who can come to an alarm, their availability and their last position.

Positions are dangerous data. Nothing here logs coordinates, and only the last position of each
responder is kept (no history); :func:`forget_positions` erases old ones.

A responder's ``mqtt_user`` is also their broker account. Broker usernames are one namespace
shared with wristbands and the hub, and the ACL gives each account the topics named after its
username, so a responder account must never take the name of a device or of the hub.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from broker.accounts import PasswordFile, generate_password
from broker.config import HUB_USER, BrokerSettings
from broker.launcher import signal_running_broker
from devicekit.topics import validate_device_id
from hub.admin import AdminError
from hub.deliveries import stop_deliveries_to
from hub.geo import as_utc, check_coordinates, nearest_responders
from hub.models import Device, Responder, utc_now
from hub.owntracks import OwnTracksLocation

if TYPE_CHECKING:
    from hub.plugin_manager import NotifierRegistry

log = logging.getLogger(__name__)


class ResponderError(AdminError):
    """A responder request that cannot be carried out; the message says why."""


class UsernameTaken(ResponderError):
    """The broker username belongs to someone else already (a conflict, not a typo)."""


@dataclass(frozen=True)
class ResponderCredentials:
    responder: Responder
    password: str
    broker_reloaded: bool


@dataclass(frozen=True)
class RegisteredResponder:
    """A new responder; with a broker account, its password (shown once) and whether the
    running broker was told to read it."""

    responder: Responder
    password: str | None = None
    broker_reloaded: bool = False


def register_responder(
    engine: Engine,
    registry: NotifierRegistry,
    broker_data_dir: Path | None,
    name: str,
    channel_url: str,
    radius_m: float,
    mqtt_user: str | None = None,
    language: str = "en",
    fallback_urls: Iterable[str] = (),
    receives_tests: bool = False,
) -> RegisteredResponder:
    """What ``natalia responder add`` and ``POST /v1/responders`` both do.

    Checks every channel URL against the installed notifiers first (nothing is stored for a URL
    no plugin can send to), then adds the responder, with their broker account when they have an
    OwnTracks username.
    """
    fallback_urls = list(fallback_urls)
    for url in (channel_url, *fallback_urls):
        registry.validate(url)
    details: dict[str, Any] = {
        "language": language,
        "fallback_urls": fallback_urls,
        "receives_tests": receives_tests,
    }
    if mqtt_user is None:
        return RegisteredResponder(add_responder(engine, name, channel_url, radius_m, **details))
    creds = add_responder_with_account(
        engine, name, channel_url, radius_m, mqtt_user, broker_data_dir, **details
    )
    return RegisteredResponder(creds.responder, creds.password, creds.broker_reloaded)


def add_responder(
    engine: Engine,
    name: str,
    channel_url: str,
    radius_m: float,
    mqtt_user: str | None = None,
    language: str = "en",
    fallback_urls: Iterable[str] = (),
    receives_tests: bool = False,
) -> Responder:
    """Register a responder (available at once). Channel URLs are checked by the caller.

    ``mqtt_user`` links the responder to the positions their OwnTracks app publishes; the
    broker account itself is made by :func:`add_responder_with_account`.
    """
    with Session(engine) as session:
        responder = _insert(
            session, name, channel_url, radius_m, mqtt_user, language, fallback_urls, receives_tests
        )
        session.commit()
        return _detached(session, responder)


def add_responder_with_account(
    engine: Engine,
    name: str,
    channel_url: str,
    radius_m: float,
    mqtt_user: str,
    broker_data_dir: Path | None,
    language: str = "en",
    fallback_urls: Iterable[str] = (),
    receives_tests: bool = False,
    password: str | None = None,
) -> ResponderCredentials:
    """Register a responder and create their broker account; the password is returned once."""
    if broker_data_dir is None:
        raise ResponderError(
            "the config has no [broker] data_dir: cannot create the responder's broker account"
        )
    settings = BrokerSettings(data_dir=broker_data_dir)
    accounts = PasswordFile(settings.password_file)
    with Session(engine) as session:
        responder = _insert(
            session, name, channel_url, radius_m, mqtt_user, language, fallback_urls, receives_tests
        )
        if mqtt_user in accounts:
            raise UsernameTaken(
                f"the broker already has an account {mqtt_user!r} (a wristband, the hub or "
                "another responder); choose another username"
            )
        password = password or generate_password()
        accounts.set(mqtt_user, password)
        try:
            session.commit()
        except Exception:
            accounts.remove(mqtt_user)
            raise
        responder = _detached(session, responder)
    return ResponderCredentials(responder, password, signal_running_broker(settings))


def set_availability(engine: Engine, responder_id: int, available: bool) -> Responder:
    """Mark a responder as on call (found for alarms near them) or off. Off call, they get
    nothing more about any alarm, and what was still waiting to go to them is cancelled
    (``hub.recipients``)."""
    with Session(engine) as session:
        responder = session.get(Responder, responder_id)
        if responder is None:
            raise ResponderError(f"no responder with id {responder_id}")
        responder.available = available
        session.add(responder)
        if not available:
            reason = "the responder was taken off call"
            stop_deliveries_to(session, reason, utc_now(), responder_id=responder_id)
        session.commit()
        return _detached(session, responder)


def record_position(
    engine: Engine,
    mqtt_user: str,
    location: OwnTracksLocation,
    now: datetime | None = None,
) -> Responder | None:
    """Store the position an OwnTracks app published for ``mqtt_user`` (the topic's user).

    Returns ``None`` when no responder has that username: the caller keeps the message as
    refused. A fix older than (or as old as) the stored one is ignored, since the broker and
    shared subscriptions may deliver out of order and the app re-sends queued fixes after a
    reconnect; the responder is returned unchanged then. A fix time in the future (a phone's
    wrong clock) is taken as ``now``, so it cannot block later, correct positions.
    """
    if location.user != mqtt_user:
        raise ValueError("the location was published for another user than the one given")
    return _store_position(
        engine,
        col(Responder.mqtt_user) == mqtt_user,
        location.lat,
        location.lon,
        location.acc,
        location.fix_time,
        now,
    )


def record_position_by_id(
    engine: Engine,
    responder_id: int,
    lat: float,
    lon: float,
    accuracy_m: float | None,
    at: datetime,
    now: datetime | None = None,
) -> Responder | None:
    """Like :func:`record_position`, for a position from another source (the HTTP API).

    Returns ``None`` when there is no responder ``responder_id``. ``at`` must be aware.
    """
    check_coordinates(lat, lon)
    if accuracy_m is not None and not (math.isfinite(accuracy_m) and accuracy_m >= 0):
        raise ValueError("accuracy must be a finite number of metres, 0 or more")
    if at.tzinfo is None:
        raise ValueError("the position time must be timezone-aware")
    return _store_position(engine, col(Responder.id) == responder_id, lat, lon, accuracy_m, at, now)


def find_nearby(
    engine: Engine, lat: float, lon: float, now: datetime, max_age: timedelta
) -> list[tuple[Responder, float]]:
    """Available responders with a fresh position whose own radius covers ``lat``/``lon``.

    Nearest first, with distances in metres; see :func:`hub.geo.nearest_responders`.
    """
    check_coordinates(lat, lon)
    oldest = as_utc(now) - max_age
    with Session(engine) as session:
        rows = session.exec(
            select(Responder).where(
                col(Responder.available).is_(True),
                col(Responder.lat).is_not(None),
                col(Responder.lon).is_not(None),
                col(Responder.position_at) >= oldest,
            )
        ).all()
        candidates = [_detached(session, responder, loaded=True) for responder in rows]
    return nearest_responders(candidates, lat, lon, now, max_age)


def list_responders(engine: Engine) -> list[Responder]:
    with Session(engine) as session:
        rows = session.exec(select(Responder).order_by(col(Responder.id))).all()
        return [_detached(session, responder, loaded=True) for responder in rows]


def forget_positions(engine: Engine, older_than: datetime) -> int:
    """Erase positions taken before ``older_than`` (retention); return how many were erased."""
    with Session(engine) as session:
        result = session.exec(
            update(Responder)
            .where(col(Responder.position_at) < as_utc(older_than))
            .values(lat=None, lon=None, accuracy_m=None, position_at=None)
        )
        session.commit()
        count = int(result.rowcount)
    if count:
        log.info("erased %d responder position(s) past retention", count)
    return count


def _insert(
    session: Session,
    name: str,
    channel_url: str,
    radius_m: float,
    mqtt_user: str | None,
    language: str,
    fallback_urls: Iterable[str],
    receives_tests: bool,
) -> Responder:
    if not name.strip():
        raise ResponderError("a responder needs a name")
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise ResponderError("the radius must be a positive number of metres, e.g. 5000")
    if mqtt_user is not None:
        _check_username_is_free(session, mqtt_user)
    responder = Responder(
        name=name,
        channel_url=channel_url,
        fallback_urls=list(fallback_urls),
        language=language,
        radius_m=radius_m,
        mqtt_user=mqtt_user,
        receives_tests=receives_tests,
    )
    session.add(responder)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise UsernameTaken(f"another responder already uses username {mqtt_user!r}") from None
    return responder


def _check_username_is_free(session: Session, mqtt_user: str) -> None:
    try:
        validate_device_id(mqtt_user)
    except ValueError:
        raise ResponderError(
            f"invalid username {mqtt_user!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        ) from None
    if mqtt_user == HUB_USER:
        raise UsernameTaken(f"{HUB_USER!r} is the hub's own broker account")
    if session.get(Device, mqtt_user) is not None:
        raise UsernameTaken(f"{mqtt_user!r} is a wristband's id; choose another username")
    taken = session.exec(select(Responder.id).where(Responder.mqtt_user == mqtt_user)).first()
    if taken is not None:
        raise UsernameTaken(f"responder {taken} already uses username {mqtt_user!r}")


def _store_position(
    engine: Engine,
    which: Any,
    lat: float,
    lon: float,
    accuracy_m: float | None,
    at: datetime,
    now: datetime | None,
) -> Responder | None:
    received = as_utc(now) if now is not None else datetime.now(UTC)
    stored_at = min(as_utc(at), received)
    with Session(engine) as session:
        # One conditional UPDATE: two hub instances storing fixes of the same responder at
        # once cannot let the older one win.
        result = session.exec(
            update(Responder)
            .where(which)
            .where(col(Responder.position_at).is_(None) | (col(Responder.position_at) < stored_at))
            .values(lat=lat, lon=lon, accuracy_m=accuracy_m, position_at=stored_at)
        )
        session.commit()
        responder = session.exec(select(Responder).where(which)).first()
        if responder is None:
            return None
        if result.rowcount:
            log.debug("stored a new position of responder %s", responder.id)
        else:
            log.debug("ignored an older position of responder %s", responder.id)
        return _detached(session, responder)


def _detached(session: Session, responder: Responder, loaded: bool = False) -> Responder:
    """The row, loaded and detached from ``session`` so callers can read it after it closes.

    ``loaded``: the row was just selected, not expired by a commit, so needs no reload.
    """
    if not loaded:
        session.refresh(responder)
    session.expunge(responder)
    return responder
