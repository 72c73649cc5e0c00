"""``natalia keys ...``: the keys that seal positions and secrets in the database.

``rotate`` adds a new current key to the key file, re-seals every sealed value under it, in
batches, and drops the old keys that no longer seal anything (``--keep-old`` keeps them; a
later ``reseal`` drops them). Hubs reading the same key file take the new key at their next
write, and open values sealed with it at once: they keep running. See SECURITY.md,
"Encryption at rest".
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Table, Text, func, literal, select, type_coerce, update
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from hub.config import HubConfig, load_config
from hub.sealing import (
    KEY_BYTES,
    KEYS_ENV,
    Keyring,
    KeyringError,
    Sealed,
    SealError,
    configured_keyring,
    format_entry,
    key_id_of,
    new_key_id,
    write_key_file,
)

#: Not sealed: NULL, or a value the column keeps in clear (empty, erased).
CLEAR = "clear"
#: Looks like nothing the hub writes: stored in clear by something else, or damaged.
NOT_SEALED = "not sealed"


def add_keys_commands(
    groups: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add the ``keys`` group (init, status, rotate, reseal, generate)."""
    keys = groups.add_parser(
        "keys", help="the keys that encrypt positions and secrets in the database"
    ).add_subparsers(dest="action", required=True)
    init = keys.add_parser("init", help="create the key file ([storage] position_keys_file)")
    add_config(init)
    init.set_defaults(func=keys_init)

    status = keys.add_parser("status", help="how many values each key seals")
    add_config(status)
    status.set_defaults(func=keys_status)

    for name, text in (
        ("rotate", "add a new key, re-seal every value with it, drop the old keys"),
        ("reseal", "re-seal every value with the current key, drop the keys left unused"),
    ):
        command = keys.add_parser(name, help=text)
        command.add_argument(
            "--batch", type=int, default=500, help="values per transaction (default 500)"
        )
        command.add_argument(
            "--keep-old", action="store_true", help="keep the old keys in the key file"
        )
        add_config(command)
        command.set_defaults(func=keys_rotate if name == "rotate" else keys_reseal)

    generate = keys.add_parser(
        "generate", help=f"print a new key entry (for keys kept in {KEYS_ENV})"
    )
    generate.set_defaults(func=keys_generate)


@dataclass(frozen=True)
class SealedColumn:
    table: Table
    column: Column[Any]
    type: Sealed

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


def sealed_columns() -> Iterator[SealedColumn]:
    """Every sealed column of every table (hub.db imports them all)."""
    import hub.db  # noqa: F401  (registers every table)

    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, Sealed):
                yield SealedColumn(table, column, column.type)


def _primary_key(table: Table) -> Column[Any]:
    (pk,) = table.primary_key.columns
    return pk


def count_by_key(engine: Engine) -> Counter[str]:
    """How many stored values each key id seals (and how many are :data:`CLEAR` or
    :data:`NOT_SEALED`); only the first characters of each value are read."""
    counts: Counter[str] = Counter()
    with engine.connect() as connection:
        for sealed in sealed_columns():
            raw = type_coerce(sealed.column, Text)
            rows = connection.execute(
                select(func.substr(raw, 1, 40)).where(sealed.column.is_not(None))
            )
            for (head,) in rows:
                kid = key_id_of(head)
                if kid is not None:
                    counts[kid] += 1
                else:
                    counts[CLEAR if head in sealed.type.clear else NOT_SEALED] += 1
    return counts


def reseal(engine: Engine, keyring: Keyring, batch: int = 500) -> int:
    """Re-seal every value not sealed with the current key; returns how many were.

    One transaction per ``batch`` values; a value changed meanwhile by the hub is left as the
    hub wrote it (sealed with the current key: the hub reads the same key file).
    """
    if batch < 1:
        raise KeyringError("--batch must be 1 or more")
    resealed = 0
    for sealed in sealed_columns():
        pk, raw = _primary_key(sealed.table), type_coerce(sealed.column, Text)
        purpose = sealed.type.purpose
        last: Any = None
        while True:
            current = keyring.current
            query = (
                select(pk, raw)
                .where(
                    sealed.column.is_not(None), ~raw.startswith(f"v1:{current}:", autoescape=True)
                )
                .order_by(pk)
                .limit(batch)
            )
            if last is not None:
                query = query.where(pk > last)
            with engine.begin() as connection:
                rows = connection.execute(query).all()
                for row_id, text in rows:
                    if text in sealed.type.clear:
                        continue
                    try:
                        plain = keyring.open(text, purpose)
                    except SealError as exc:
                        raise KeyringError(
                            f"{exc} ({sealed.name} row {row_id}); stopped: the values before it "
                            "are re-sealed, no key was removed"
                        ) from None
                    fresh = keyring.seal(plain, purpose)
                    resealed += connection.execute(
                        update(sealed.table)
                        .where(pk == row_id, raw == text)
                        .values({sealed.column.name: literal(fresh, Text)})
                    ).rowcount
            if len(rows) < batch:
                break
            last = rows[-1][0]
    return resealed


def unused_keys(keyring: Keyring, counts: Counter[str]) -> list[str]:
    current = keyring.current
    return [kid for kid in keyring.key_ids if kid != current and not counts[kid]]


def _config(args: argparse.Namespace) -> HubConfig:
    return load_config(args.config_path)


def _from_environment() -> bool:
    return bool(os.environ.get(KEYS_ENV, "").strip())


def _key_file(config: HubConfig, doing: str) -> Path:
    path = config.storage.position_keys_file
    if _from_environment():
        raise KeyringError(
            f"the keys come from {KEYS_ENV}, which this command cannot change: to {doing}, add "
            f"the entry `natalia keys generate` prints at the end of {KEYS_ENV}, restart every "
            "hub, run `natalia keys reseal`, then remove the entries it reports unused"
        )
    if path is None:
        raise KeyringError(
            f"no key file configured: set [storage] position_keys_file or {KEYS_ENV}"
        )
    return path


def keys_init(args: argparse.Namespace) -> int:
    path = _key_file(_config(args), "create a key")
    if path.exists():
        raise FileExistsError(f"{path} exists; `natalia keys rotate` replaces its key")
    write_key_file(path, Keyring.generate(), replace=False)
    print(f"created {path} (mode 0600); keep it secret and back it up apart from the database")
    return 0


def keys_status(args: argparse.Namespace) -> int:
    from hub.db import make_engine

    config = _config(args)
    keyring = configured_keyring(config.storage)
    source = KEYS_ENV if keyring.source is None else str(keyring.source)
    engine = make_engine(config.database.url, keyring)
    counts = count_by_key(engine)
    engine.dispose()
    print(f"keys from {source}")
    for kid in keyring.key_ids:
        mark = " (current)" if kid == keyring.current else ""
        print(f"  {kid}{mark}\t{counts.pop(kid, 0)} values")
    for kid, count in sorted(counts.items()):
        if kid == CLEAR:
            print(f"  empty or erased\t{count} values")
        elif kid == NOT_SEALED:
            print(f"  NOT SEALED\t{count} values: stored in clear by something else, or damaged")
        else:
            print(f"  {kid} (MISSING from the keys)\t{count} values: they cannot be opened")
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    config = _config(args)
    path = _key_file(config, "rotate")
    rotated = Keyring.from_file(path).with_new_key()
    write_key_file(path, rotated, replace=True)
    print(f"new current key {rotated.current} written to {path}")
    return _reseal(config, Keyring.from_file(path), args)


def keys_reseal(args: argparse.Namespace) -> int:
    config = _config(args)
    return _reseal(config, configured_keyring(config.storage), args)


def _reseal(config: HubConfig, keyring: Keyring, args: argparse.Namespace) -> int:
    from hub.db import make_engine

    engine = make_engine(config.database.url, keyring)
    count = reseal(engine, keyring, args.batch)
    print(f"re-sealed {count} values with key {keyring.current}")
    counts = count_by_key(engine)
    engine.dispose()
    unused = unused_keys(keyring, counts)
    for kid in keyring.key_ids:
        if kid != keyring.current and counts[kid]:
            print(f"key {kid} still seals {counts[kid]} values: run `natalia keys reseal` again")
    if not unused:
        return 0
    if args.keep_old or keyring.source is None:
        where = "the key file" if keyring.source is not None else KEYS_ENV
        print(f"no longer used, can be removed from {where}: {', '.join(unused)}")
        return 0
    write_key_file(keyring.source, Keyring.from_file(keyring.source).without(unused), replace=True)
    print(f"removed from {keyring.source}: {', '.join(unused)}")
    return 0


def keys_generate(args: argparse.Namespace) -> int:
    print(format_entry(new_key_id(), secrets.token_bytes(KEY_BYTES)))
    return 0
