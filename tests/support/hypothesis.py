"""Hypothesis settings, case counting and hostile-input strategies for tests/test_fuzz_*.py.

Two profiles, chosen with ``NATALIA_HYPOTHESIS_PROFILE``:

- ``ci`` (the default): 100 cases per property of weight 1, derandomized, so the normal suite is
  fast and the same on every run: it never flakes, and a failure it finds is found again.
- ``fuzz``: random (a new seed each run), with the example database on so that a failure found
  once is replayed first next time; ``make fuzz`` uses it for the long run.

``NATALIA_HYPOTHESIS_EXAMPLES`` sets the number of cases of a property of weight 1 (heavier or
slower properties scale it with their own weight). A parser case slower than 5 s fails as a
stall. Every failure prints the falsifying example and a ``@reproduce_failure`` blob.

Loaded as a pytest plugin (``pytest -p tests.support.hypothesis``, as ``make fuzz`` does) this
module prints how many cases ran, per test and in total, and fails the session when
``NATALIA_FUZZ_MIN_CASES`` is set and fewer cases ran.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import core as hypothesis_core
from hypothesis import strategies as st
from hypothesis.vendor import pretty

from devicekit import protocol

PROFILE_ENV = "NATALIA_HYPOTHESIS_PROFILE"
EXAMPLES_ENV = "NATALIA_HYPOTHESIS_EXAMPLES"
MIN_CASES_ENV = "NATALIA_FUZZ_MIN_CASES"

_COMMON: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        # Properties reuse tmp_path or a running hub across cases on purpose.
        HealthCheck.function_scoped_fixture,
    ],
}
settings.register_profile("ci", max_examples=100, derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz", max_examples=5000, derandomize=False, **_COMMON)

#: Cases run per test (node name), counted by :func:`fuzz`.
CASES: Counter[str] = Counter()

F = TypeVar("F", bound=Callable[..., Any])


def profile() -> settings:
    return settings.get_profile(os.environ.get(PROFILE_ENV, "ci"))


def examples(weight: float = 1.0) -> int:
    """Cases for a property of ``weight``: the env var's number (or the profile's) times it."""
    base = int(os.environ.get(EXAMPLES_ENV) or profile().max_examples)
    return max(1, math.ceil(base * weight))


def fuzz(weight: float = 1.0, stall_s: float | None = 5.0) -> Callable[[F], F]:
    """Put above ``@given``: the active profile's settings with :func:`examples` cases, and
    every case the test body runs is counted.

    One case taking longer than ``stall_s`` fails as a stall (a parser that backtracks or loops
    on some input); tests that talk to a broker or a server pass None and rely on their own
    timeouts.
    """

    def decorate(test: F) -> F:
        inner = test.hypothesis.inner_test  # type: ignore[attr-defined]
        name = f"{test.__module__}::{test.__name__}"

        @functools.wraps(inner)
        def counted(*args: Any, **kwargs: Any) -> Any:
            CASES[name] += 1
            return inner(*args, **kwargs)

        test.hypothesis.inner_test = counted  # type: ignore[attr-defined]
        deadline = None if stall_s is None else timedelta(seconds=stall_s)
        configured = settings(parent=profile(), max_examples=examples(weight), deadline=deadline)(
            test
        )

        @functools.wraps(configured)
        def readable(*args: Any, **kwargs: Any) -> Any:
            # Importing schemathesis (its pytest plugin) swaps Hypothesis' printer for one that
            # prints nothing, so a failure would show "x=," instead of the falsifying example.
            swapped = getattr(hypothesis_core, "RepresentationPrinter")  # noqa: B009
            setattr(hypothesis_core, "RepresentationPrinter", pretty.RepresentationPrinter)  # noqa: B010
            try:
                return configured(*args, **kwargs)
            finally:
                setattr(hypothesis_core, "RepresentationPrinter", swapped)  # noqa: B010

        return readable  # type: ignore[return-value]

    return decorate


# -- the pytest plugin part (``-p tests.support.hypothesis``) -------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    wanted = int(os.environ.get(MIN_CASES_ENV) or 0)
    if wanted and sum(CASES.values()) < wanted and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total = sum(CASES.values())
    terminalreporter.write_sep("=", "hypothesis cases")
    for name, count in sorted(CASES.items()):
        terminalreporter.write_line(f"{count:>9}  {name}")
    terminalreporter.write_line(f"{total:>9}  generated cases in total")
    wanted = int(os.environ.get(MIN_CASES_ENV) or 0)
    if wanted and total < wanted:
        terminalreporter.write_line(f"FAILED: fewer than {MIN_CASES_ENV}={wanted} cases ran")


def parsed_or_refused(parse: Callable[..., Any], *args: Any) -> Any:
    """``parse(*args)``, or None when it refused with a ``ValueError`` that gives a reason.

    Any other exception propagates: hostile input must never raise one.
    """
    try:
        return parse(*args)
    except ValueError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a reason"
        return None


# -- JSON ------------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
#: Any JSON value (finite numbers), a few levels deep.
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, with NaN and Infinity written as the bare words a sender could use."""
    return json.dumps(value, separators=(",", ":"), allow_nan=True).encode()


# -- valid device messages, built field by field from the protocol models -------------------------

ids = st.from_regex(protocol.ID_RE, fullmatch=True)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
#: Aware times whose UTC value is a ``datetime`` too (the hub converts every time to UTC).
aware_times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC) | offsets,
)
#: Times a real device sends: within a few decades of now.
recent_times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC) | offsets,
)
sequences = st.integers(min_value=0, max_value=2**53 - 1)
batteries = st.none() | st.integers(min_value=0, max_value=100)


def positions(times: st.SearchStrategy[datetime] = aware_times) -> st.SearchStrategy[Any]:
    return st.builds(
        protocol.Position,
        lat=st.floats(min_value=-90, max_value=90),
        lon=st.floats(min_value=-180, max_value=180),
        accuracy_m=st.floats(min_value=0, max_value=1_000_000),
        fix_ts=times,
    )


def device_messages(
    channel: str, times: st.SearchStrategy[datetime] = aware_times
) -> st.SearchStrategy[Any]:
    """Valid messages of ``channel``: every field of the model is drawn from its constraints."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "alarm": {
            "alarm_id": ids,
            "kind": st.sampled_from(protocol.AlarmKind),
            "ts": times,
            "seq": sequences,
            "position": st.none() | positions(times),
            "battery": batteries,
        },
        "cancel": {
            "alarm_id": ids,
            "ts": times,
            "seq": sequences,
            "code": st.text(min_size=1, max_size=32),
        },
        "location": {
            "alarm_id": st.none() | ids,
            "ts": times,
            "seq": sequences,
            "position": positions(times),
        },
        "heartbeat": {
            "ts": times,
            "seq": sequences,
            "battery": batteries,
            "interval_s": st.integers(min_value=10, max_value=86_400),
        },
        "status": {"state": st.sampled_from(["online", "offline"]), "ts": times, "seq": sequences},
    }[channel]
    model = protocol.CHANNEL_MODELS[channel]
    # A field added to a model must be added here too, or valid messages lose coverage.
    assert set(fields) | {"v", "type"} == set(model.model_fields), channel
    return st.builds(model, **fields)


def any_device_message(
    times: st.SearchStrategy[datetime] = aware_times,
) -> st.SearchStrategy[Any]:
    return st.one_of([device_messages(channel, times) for channel in protocol.DEVICE_CHANNELS])


# -- hostile device payloads: every one must be refused -------------------------------------------

#: The JSON kinds each field of a device message accepts; every other kind is a wrong type.
_FIELD_KINDS: dict[str, set[str]] = {
    "v": {"int"},
    "type": {"str"},
    "alarm_id": {"str", "null"},
    "kind": {"str"},
    "ts": {"str"},
    "fix_ts": {"str"},
    "seq": {"int"},
    "position": {"object", "null"},
    "battery": {"int", "null"},
    "code": {"str"},
    "interval_s": {"int"},
    "state": {"str"},
    "lat": {"int", "float"},
    "lon": {"int", "float"},
    "accuracy_m": {"int", "float"},
}
_KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "bool": st.booleans(),
    "int": st.integers(min_value=-(2**64), max_value=2**64),
    "float": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    "str": st.text(max_size=20),
    "list": st.lists(json_scalars, max_size=3),
    "object": st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
}
_NUMERIC = ("seq", "battery", "interval_s", "v", "lat", "lon", "accuracy_m")
_BAD_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80")
_BOM = b"\xef\xbb\xbf"


def _wire(message: Any) -> dict[str, Any]:
    """The JSON object of a message as it goes on the wire."""
    data: dict[str, Any] = json.loads(message.to_payload())
    return data


def _paths(data: dict[str, Any]) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in data.items():
        found.append((key,))
        if isinstance(value, dict):
            found.extend((key, inner) for inner in value)
    return found


def _replace(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(data))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def _drop(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(data))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


@st.composite
def mutated_payloads(draw: st.DrawFn, channel: str | None = None) -> tuple[str, bytes, str]:
    """``(channel, payload, what was done)``: a valid message broken in one way the schema must
    refuse. The message is drawn from ``channel`` (any device channel when None)."""
    channel = channel or draw(st.sampled_from(protocol.DEVICE_CHANNELS))
    message = draw(device_messages(channel, recent_times))
    data = _wire(message)
    model = protocol.CHANNEL_MODELS[channel]
    # v is required by parse_device_message, type by the union, the others by the models.
    required: list[tuple[str, ...]] = [
        (name,) for name, field in model.model_fields.items() if field.is_required()
    ]
    required += [("v",), ("type",)]
    if "position" in data:
        required += [("position", name) for name in protocol.Position.model_fields]
    numeric = [p for p in _paths(data) if p[-1] in _NUMERIC]
    strings = [p for p in _paths(data) if p[-1] in ("ts", "fix_ts", "alarm_id", "kind", "state")]
    how = draw(
        st.sampled_from(
            [
                "drop",
                "unknown",
                "wrong-type",
                "non-finite",
                "huge",
                "deep",
                "bad-utf8",
                "bom",
                "oversized",
                "not-object",
                "wrong-type-field",
                "version",
                "bad-string",
            ]
        )
    )
    payload: bytes
    path: tuple[str, ...]
    value: Any
    if how == "drop":
        path = draw(st.sampled_from(required))
        payload = dumps(_drop(data, path))
    elif how == "unknown":
        where = draw(st.sampled_from([(), ("position",)] if "position" in data else [()]))
        known = set(protocol.Position.model_fields if where else model.model_fields) | {"sig"}
        key = draw(st.text(max_size=12).filter(lambda k: k not in known))
        payload = dumps(_replace(data, (*where, key), draw(json_values)))
    elif how == "wrong-type":
        path = draw(st.sampled_from(_paths(data)))
        kind = draw(st.sampled_from(sorted(set(_KIND_VALUES) - _FIELD_KINDS[path[-1]])))
        payload = dumps(_replace(data, path, draw(_KIND_VALUES[kind])))
    elif how == "non-finite" and numeric:
        path = draw(st.sampled_from(numeric))
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        payload = dumps(_replace(data, path, value))
    elif how == "huge" and numeric:
        path = draw(st.sampled_from(numeric))
        big = draw(st.integers(min_value=2**53, max_value=10**4000))
        text = dumps(_replace(data, path, "HUGE")).replace(b'"HUGE"', str(big).encode())
        payload = text if draw(st.booleans()) else text.replace(str(big).encode(), b"1e999")
    elif how == "deep":
        depth = draw(st.integers(min_value=200, max_value=7000))
        path = draw(st.sampled_from(_paths(data)))
        payload = dumps(_replace(data, path, "DEEP")).replace(
            b'"DEEP"', b"[" * depth + b"]" * depth
        )
    elif how == "bad-utf8" and strings:
        path = draw(st.sampled_from(strings))
        bad = draw(st.sampled_from(_BAD_UTF8))
        payload = dumps(_replace(data, path, "BAD")).replace(b'"BAD"', b'"' + bad + b'"')
    elif how == "bom":
        payload = _BOM + dumps(data)
    elif how == "oversized":
        size = draw(st.integers(min_value=protocol.MAX_PAYLOAD_BYTES, max_value=70_000))
        body = dumps(data)
        payload = body[:-1] + b"," + b" " * (size - len(body) + 1) + b"}"
    elif how == "not-object":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        payload = dumps(value)
    elif how == "wrong-type-field":
        other = draw(st.sampled_from([c for c in protocol.CHANNEL_MODELS if c != channel]))
        payload = dumps({**data, "type": draw(st.sampled_from([other, channel.upper(), ""]))})
    elif how == "version":
        payload = dumps({**data, "v": draw(st.sampled_from([0, 2, -1, "1", 1.5, True, None]))})
    else:  # "bad-string", and the cases above that had no field to work on
        path = draw(st.sampled_from(strings or [("type",)]))
        payload = dumps(_replace(data, path, draw(st.sampled_from(["", " ", "\x00", "x" * 70]))))
    return channel, payload, how


#: Bytes that are almost JSON: pieces of device messages glued together at random.
_FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b'"v"',
    b"1",
    b'"type"',
    b'"alarm"',
    b'"ts"',
    b'"2026-01-01T00:00:00Z"',
    b"null",
    b"true",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    _BOM,
    *_BAD_UTF8,
]
json_ish_bytes = st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=4), max_size=40).map(
    b"".join
)
hostile_bytes = st.binary(max_size=600) | json_ish_bytes
