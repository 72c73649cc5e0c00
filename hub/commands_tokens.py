"""``natalia token ...``: API tokens for HQ staff and partner systems.

A token's secret is printed once, by ``create``; the database keeps only its hash.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sdk.models import ApiRole


def add_token_commands(
    groups: argparse._SubParsersAction[Any],
    add_config: Callable[[argparse.ArgumentParser], object],
) -> None:
    """Add the ``token`` group (create, list, revoke) to the ``natalia`` sub-commands."""
    token = groups.add_parser("token", help="API tokens and their roles").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="create a token; its secret is shown once")
    create.add_argument("name", help="who or what uses it, e.g. 'fund-integration'")
    create.add_argument(
        "--role",
        required=True,
        choices=[role.value for role in ApiRole],
        help="admin: everything; hq: operations and alarm actions; integration: the fund and "
        "Defenders' Days; read_only: reads only",
    )
    create.add_argument("--expires-days", type=int, help="expire after this many days")
    add_config(create)
    create.set_defaults(func=token_create)

    listing = token.add_parser("list", help="tokens (never their secrets)")
    add_config(listing)
    listing.set_defaults(func=token_list)

    revoke = token.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("token_id", type=int)
    add_config(revoke)
    revoke.set_defaults(func=token_revoke)


def _engine(args: argparse.Namespace) -> Any:
    from hub.config import load_config
    from hub.db import engine_for

    return engine_for(load_config(args.config_path))


def token_create(args: argparse.Namespace) -> int:
    from hub.api.tokens import TokenError, create_token

    if args.expires_days is not None and args.expires_days < 1:
        raise TokenError("--expires-days must be 1 or more")
    expires = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
    row, secret = create_token(_engine(args), args.name, ApiRole(args.role), expires)
    print(f"token {row.id} ({row.role}) for {row.name}; the secret is shown once:")
    print(secret)
    return 0


def token_list(args: argparse.Namespace) -> int:
    from hub.api.tokens import list_tokens

    for row in list_tokens(_engine(args)):
        state = "revoked" if row.revoked_at else "active"
        if row.expires_at and not row.revoked_at:
            state += f", expires {row.expires_at:%Y-%m-%d}"
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        print(f"{row.id}\t{row.prefix}...\t{row.role}\t{row.name}\t{state}\tlast used {used}")
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    from hub.api.tokens import revoke_token

    row = revoke_token(_engine(args), args.token_id)
    print(f"token {row.id} ({row.name}) revoked")
    return 0
