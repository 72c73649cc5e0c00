"""Distances on the Earth and who is near an alarm. Pure functions: no database, no clock.

Great-circle distance with the haversine formula on a sphere of the mean Earth radius (IUGG,
6,371,008.8 m). Its error against the ellipsoid is below 0.5 %, far less than a phone's
position error over the few kilometres that decide who can come to help.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

#: Mean Earth radius R1 = (2a + b) / 3 of WGS 84, in metres.
EARTH_MEAN_RADIUS_M = 6_371_008.8


class Positioned(Protocol):
    """What :func:`nearest_responders` reads of a responder (``hub.models.Responder`` fits)."""

    @property
    def id(self) -> int | None: ...
    @property
    def available(self) -> bool: ...
    @property
    def radius_m(self) -> float: ...
    @property
    def lat(self) -> float | None: ...
    @property
    def lon(self) -> float | None: ...
    @property
    def position_at(self) -> datetime | None: ...


R = TypeVar("R", bound=Positioned)


def check_coordinates(lat: float, lon: float) -> None:
    """Raise ``ValueError`` unless ``lat``/``lon`` are finite degrees in range.

    The message never contains the coordinates: it may end up in a log.
    """
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise ValueError("latitude must be a finite number of degrees from -90 to 90")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise ValueError("longitude must be a finite number of degrees from -180 to 180")


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points given in degrees (WGS 84)."""
    check_coordinates(lat1, lon1)
    check_coordinates(lat2, lon2)
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    # Rounding can push h a hair above 1 for antipodal points; asin would then fail.
    return 2 * EARTH_MEAN_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC time; a naive one (as SQLite returns them) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def nearest_responders(
    responders: Iterable[R], lat: float, lon: float, now: datetime, max_age: timedelta
) -> list[tuple[R, float]]:
    """Responders who can come to ``lat``/``lon``, nearest first, each with its distance in metres.

    A responder counts when they are ``available``, their last position is no older than
    ``max_age`` at ``now``, and the alarm lies within *their own* ``radius_m`` (how far they
    said they would travel). Equal distances are ordered by id, so the result is stable.
    """
    check_coordinates(lat, lon)
    if max_age < timedelta(0):
        raise ValueError("max_age must not be negative")
    oldest = as_utc(now) - max_age
    found: list[tuple[R, float]] = []
    for responder in responders:
        if not responder.available:
            continue
        r_lat, r_lon, at = responder.lat, responder.lon, responder.position_at
        if r_lat is None or r_lon is None or at is None or as_utc(at) < oldest:
            continue
        distance = haversine_m(lat, lon, r_lat, r_lon)
        if distance <= responder.radius_m:
            found.append((responder, distance))
    found.sort(key=lambda pair: (pair[1], pair[0].id is None, pair[0].id or 0))
    return found
