"""Distances and who is near an alarm: pure functions, checked against known distances."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from hub.geo import EARTH_MEAN_RADIUS_M, haversine_m, nearest_responders
from hub.models import Responder

NOW = datetime(2025, 3, 8, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# An alarm in central Stockholm (Sergels torg).
ALARM = (59.3326, 18.0649)


def test_stockholm_to_moscow_is_about_1227_km() -> None:
    distance = haversine_m(59.3293, 18.0686, 55.7558, 37.6173)
    assert distance == pytest.approx(1_227_000, rel=0.005)


def test_nashville_to_los_angeles_matches_the_textbook_haversine_example() -> None:
    # 2,887.26 km with R = 6,372.8 km (the classic worked example), scaled to the mean radius.
    expected = 2_887_259.95 * EARTH_MEAN_RADIUS_M / 6_372_800
    assert haversine_m(36.12, -86.67, 33.94, -118.40) == pytest.approx(expected, rel=1e-6)


def test_one_degree_of_latitude_is_the_mean_radius_times_pi_over_180() -> None:
    assert haversine_m(10, 20, 11, 20) == pytest.approx(EARTH_MEAN_RADIUS_M * math.pi / 180)


@pytest.mark.parametrize(
    ("lat1", "lon1", "lat2", "lon2"),
    [(0, 0, 0, 180), (90, 0, -90, 0), (45, 10, -45, -170), (-33.9, 151.2, 33.9, -28.8)],
)
def test_antipodes_are_half_the_circumference_apart(lat1, lon1, lat2, lon2) -> None:
    assert haversine_m(lat1, lon1, lat2, lon2) == pytest.approx(math.pi * EARTH_MEAN_RADIUS_M)


def test_same_point_is_zero_metres() -> None:
    assert haversine_m(*ALARM, *ALARM) == 0.0


def test_distance_is_symmetric_and_wraps_the_date_line() -> None:
    assert haversine_m(0, 179.5, 0, -179.5) == pytest.approx(EARTH_MEAN_RADIUS_M * math.pi / 180)
    assert haversine_m(10, 20, 30, 40) == haversine_m(30, 40, 10, 20)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.5, 0), (-91, 0), (0, 180.1), (0, -181), (math.nan, 0), (0, math.inf)]
)
def test_coordinates_out_of_range_are_refused_without_echoing_them(lat, lon) -> None:
    with pytest.raises(ValueError) as caught:
        haversine_m(lat, lon, 0, 0)
    assert str(caught.value) in {
        "latitude must be a finite number of degrees from -90 to 90",
        "longitude must be a finite number of degrees from -180 to 180",
    }


def responder(
    id: int,
    north_m: float | None,
    radius_m: float = 5000,
    available: bool = True,
    age: timedelta = timedelta(minutes=5),
) -> Responder:
    """A responder ``north_m`` metres due north of the alarm (None: no position)."""
    if north_m is None:
        return Responder(id=id, name=f"r{id}", channel_url="console://", radius_m=radius_m)
    degrees = north_m / (EARTH_MEAN_RADIUS_M * math.pi / 180)
    return Responder(
        id=id,
        name=f"r{id}",
        channel_url="console://",
        radius_m=radius_m,
        available=available,
        lat=ALARM[0] + degrees,
        lon=ALARM[1],
        accuracy_m=10,
        position_at=NOW - age,
    )


def ids(found: list[tuple[Responder, float]]) -> list[int | None]:
    return [r.id for r, _ in found]


def test_nearest_responder_comes_first_with_its_distance() -> None:
    found = nearest_responders(
        [responder(1, 3000), responder(2, 800), responder(3, 1500)], *ALARM, NOW, HOUR
    )
    assert ids(found) == [2, 3, 1]
    assert [round(d) for _, d in found] == [800, 1500, 3000]


def test_each_responder_own_radius_decides_not_the_alarm() -> None:
    near_but_unwilling = responder(1, 1000, radius_m=500)
    far_but_willing = responder(2, 20_000, radius_m=25_000)
    just_inside = responder(3, 4999, radius_m=5000)
    just_outside = responder(4, 5001, radius_m=5000)
    found = nearest_responders(
        [near_but_unwilling, far_but_willing, just_inside, just_outside], *ALARM, NOW, HOUR
    )
    assert ids(found) == [3, 2]


def test_unavailable_responder_is_not_found() -> None:
    found = nearest_responders(
        [responder(1, 100, available=False), responder(2, 200)], *ALARM, NOW, HOUR
    )
    assert ids(found) == [2]


def test_stale_position_is_not_used() -> None:
    found = nearest_responders(
        [
            responder(1, 100, age=HOUR + timedelta(seconds=1)),
            responder(2, 200, age=HOUR),
            responder(3, 300, age=timedelta(0)),
        ],
        *ALARM,
        NOW,
        HOUR,
    )
    assert ids(found) == [2, 3]


def test_responder_without_position_is_not_found() -> None:
    found = nearest_responders([responder(1, None), responder(2, 100)], *ALARM, NOW, HOUR)
    assert ids(found) == [2]


def test_equal_distances_are_ordered_by_id() -> None:
    found = nearest_responders(
        [responder(7, 1000), responder(3, 1000), responder(5, 1000)], *ALARM, NOW, HOUR
    )
    assert ids(found) == [3, 5, 7]


def test_naive_position_time_is_taken_as_utc() -> None:
    fresh = responder(1, 100)
    assert fresh.position_at is not None
    fresh.position_at = fresh.position_at.replace(tzinfo=None)
    assert ids(nearest_responders([fresh], *ALARM, NOW, HOUR)) == [1]


def test_any_object_with_the_fields_can_be_ranked() -> None:
    @dataclass
    class Volunteer:
        id: int | None
        available: bool
        radius_m: float
        lat: float | None
        lon: float | None
        position_at: datetime | None

    volunteer = Volunteer(9, True, 1000, ALARM[0], ALARM[1], NOW)
    [(found, distance)] = nearest_responders([volunteer], *ALARM, NOW, HOUR)
    assert found is volunteer and distance == 0.0


def test_invalid_alarm_position_is_refused() -> None:
    with pytest.raises(ValueError, match="latitude"):
        nearest_responders([responder(1, 100)], 123.0, 0.0, NOW, HOUR)
