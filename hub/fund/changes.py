"""What an edit of a fund request changes, and amounts as stored (integer hundredths).

Only the fields the caller set count (``model_fields_set``), so ``{"startup_grant": null}``
removes the grant while a missing ``startup_grant`` leaves it alone. The audit note names each
changed field with its old and new value, except the free-text description: only that it
changed (what a defender wrote about their situation stays out of the trail).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hub.fund.errors import FundInvalid
from hub.fund.tables import FundRequest, MoneyError, from_hundredths, to_hundredths
from sdk.models import FundPurpose, FundRequestUpdate

#: Fields an edit may change, in the order the audit note names them.
EDITABLE = ("purpose", "amount", "currency", "startup_grant", "description")
_REQUIRED = frozenset({"purpose", "amount", "currency"})
_MONEY = frozenset({"amount", "startup_grant"})


def changed_columns(
    request: FundRequest, changes: FundRequestUpdate
) -> tuple[dict[str, Any], list[str]]:
    """The columns to write and one audit note per changed field (free text: its name only)."""
    given = changes.model_dump(include=changes.model_fields_set)
    nulled = sorted(_REQUIRED & {name for name, value in given.items() if value is None})
    if nulled:
        raise FundInvalid(f"{', '.join(nulled)} cannot be removed, only changed")
    values: dict[str, Any] = {}
    notes: list[str] = []
    for name in (field for field in EDITABLE if field in given):
        column, old, new = _stored(request, name, given[name])
        if new == old:
            continue
        values[column] = new
        if name == "description":
            notes.append("description changed")
        else:
            notes.append(f"{name}: {_shown(column, old)} -> {_shown(column, new)}")
    return values, notes


def _stored(request: FundRequest, name: str, value: Any) -> tuple[str, Any, Any]:
    """The column behind field ``name``, its stored value and the one ``value`` would store."""
    if name in _MONEY:
        column = f"{name}_hundredths"
        return column, getattr(request, column), optional_hundredths(name, value)
    if name == "purpose":
        return name, request.purpose, FundPurpose(value).value
    if name == "description":
        return name, request.description, value or ""
    return name, getattr(request, name), value


def _shown(column: str, stored: Any) -> str:
    if stored is None:
        return "none"
    return str(from_hundredths(stored)) if column.endswith("_hundredths") else str(stored)


def hundredths(name: str, amount: Decimal) -> int:
    try:
        return to_hundredths(amount)
    except MoneyError as exc:
        raise FundInvalid(f"{name}: {exc}") from None


def optional_hundredths(name: str, amount: Decimal | None) -> int | None:
    return None if amount is None else hundredths(name, amount)
