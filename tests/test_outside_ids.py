"""The keyed permutation behind the ids shown outside HQ, and its key (``hub.outside_ids``)."""

from __future__ import annotations

import itertools
import random
import secrets
import threading

import pytest
from sqlalchemy import Text, select, type_coerce
from sqlalchemy.engine import Engine
from sqlmodel import col

from hub.commands_keys import reseal
from hub.db import make_engine
from hub.models import HubSecret
from hub.outside_ids import (
    KEY_BYTES,
    KEY_NAME,
    IdKind,
    IdPermutation,
    deployment_key,
    outside_ids,
)
from hub.sealing import Keyring
from sdk.models import MAX_ID

#: Small ids (a young hub's), both ends of the range, and ids from all over it.
SAMPLE = [
    *range(1, 3001),
    *range(MAX_ID - 1000, MAX_ID + 1),
    *random.Random(11).sample(range(1, MAX_ID + 1), 3000),
]


def permutation(kind: IdKind = IdKind.ALARM_EVENT) -> IdPermutation:
    return IdPermutation(secrets.token_bytes(KEY_BYTES), kind)


def test_the_permutation_maps_ids_one_to_one_into_their_range_and_back() -> None:
    ids = permutation()
    shown = [ids.shown(raw) for raw in SAMPLE]
    assert all(1 <= value <= MAX_ID for value in shown)
    assert len(set(shown)) == len(SAMPLE)  # no two ids shown alike
    assert [ids.raw(value) for value in shown] == SAMPLE
    # and the other way round: any number an outsider sends maps to a row id and back
    assert all(ids.shown(ids.raw(value)) == value for value in SAMPLE)
    assert ids.shown(0) == ids.raw(0) == 0  # "before every row" stays itself
    for outside in (-1, MAX_ID + 1):
        with pytest.raises(ValueError):
            ids.shown(outside)
        with pytest.raises(ValueError):
            ids.raw(outside)


def test_shown_ids_keep_neither_order_nor_distance() -> None:
    ids = permutation()
    shown = [ids.shown(raw) for raw in range(1, 2001)]
    steps = [after - before for before, after in itertools.pairwise(shown)]
    assert 1 not in steps  # consecutive rows are not shown as consecutive numbers
    rising = sum(step > 0 for step in steps) / len(steps)
    assert 0.4 < rising < 0.6  # as often up as down: the order says nothing


def test_different_keys_and_kinds_give_different_permutations() -> None:
    key = secrets.token_bytes(KEY_BYTES)
    events, deliveries = IdPermutation(key, IdKind.ALARM_EVENT), IdPermutation(key, IdKind.DELIVERY)
    other = IdPermutation(secrets.token_bytes(KEY_BYTES), IdKind.ALARM_EVENT)
    same_key = IdPermutation(key, IdKind.ALARM_EVENT)
    for ids in (deliveries, other):
        alike = sum(ids.shown(raw) == events.shown(raw) for raw in SAMPLE)
        assert alike <= 1
    assert all(same_key.shown(raw) == events.shown(raw) for raw in SAMPLE[:500])


def test_every_hub_on_one_database_shares_one_sealed_key_that_survives_key_rotation(
    database_url: str,
) -> None:
    """Several hubs making the key at once agree on one; it is stored sealed; rotating the
    position keys re-seals it and changes no id shown."""
    hubs = [make_engine(database_url) for _ in range(4)]
    start = threading.Barrier(len(hubs))
    keys: list[bytes] = []

    def make(engine: Engine) -> None:
        start.wait()
        keys.append(deployment_key(engine))

    threads = [threading.Thread(target=make, args=(engine,)) for engine in hubs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(keys) == len(hubs) and len(set(keys)) == 1 and len(keys[0]) == KEY_BYTES
    as_stored = select(type_coerce(col(HubSecret.value), Text))
    with hubs[0].connect() as connection:
        stored = connection.execute(as_stored.where(col(HubSecret.name) == KEY_NAME)).scalar_one()
    assert stored.startswith("v1:") and keys[0].hex() not in stored  # sealed, not in clear
    before = [outside_ids(hubs[0]).events.shown(raw) for raw in SAMPLE[:200]]
    for engine in hubs:
        engine.dispose()

    rotated = Keyring.from_environment().with_new_key()
    engine = make_engine(database_url, rotated)
    assert reseal(engine, rotated) >= 1
    engine.dispose()
    only_new = Keyring({rotated.current: _key_of(rotated)})
    engine = make_engine(database_url, only_new)
    try:
        assert deployment_key(engine) == keys[0]
        assert [outside_ids(engine).events.shown(raw) for raw in SAMPLE[:200]] == before
    finally:
        engine.dispose()


def _key_of(keyring: Keyring) -> bytes:
    """The current key's bytes (from the keyring's own file format)."""
    from hub.sealing import parse_entries

    return parse_entries(keyring.entries(), "test")[keyring.current]
