"""The fund's tables: requests and their audit trail.

Money is stored as an integer number of hundredths (``amount_hundredths``), never as a float:
SQLite has no exact decimal type (SQLAlchemy's ``Numeric`` goes through a float there), and an
integer is exact, portable and sums correctly in SQL. The API accepts at most two decimal places
in any currency, so hundredths hold every accepted amount exactly; ``amount`` gives it back as a
``Decimal`` with two places.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from hub.models import utc_now
from sdk.models import FundState

#: The largest amount the API accepts (``sdk.models.Money``: 14 digits, 2 after the point).
MAX_HUNDREDTHS = 10**14 - 1


class MoneyError(ValueError):
    """An amount that cannot be stored exactly."""


def to_hundredths(amount: Decimal) -> int:
    """``Decimal("1500.5")`` -> ``150050``; refuses what hundredths cannot hold exactly."""
    if not amount.is_finite():
        raise MoneyError("an amount must be a finite number")
    scaled = amount.scaleb(2)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{amount} has more than two decimal places")
    hundredths = int(scaled)
    if not 0 < hundredths <= MAX_HUNDREDTHS:
        raise MoneyError(f"{amount} is not between 0.01 and 999999999999.99")
    return hundredths


def from_hundredths(hundredths: int) -> Decimal:
    """``150050`` -> ``Decimal("1500.50")``."""
    return Decimal(hundredths).scaleb(-2)


def aware(moment: datetime) -> datetime:
    """A stored time as aware UTC (SQLite, and PostgreSQL's ``timestamp``, give naive ones)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class FundAction(enum.StrEnum):
    """What an audit event records (``FundRequestEvent.action``)."""

    CREATED = "created"
    UPDATED = "updated"  #: edited while submitted; the note says which fields
    STATE = "state"  #: moved in review; ``from_state`` and ``to_state`` say where


class FundRequest(SQLModel, table=True):
    """A defender's request for support from the emergency fund."""

    __tablename__ = "fundrequest"

    id: int | None = Field(default=None, primary_key=True)
    #: Not foreign keys: a partner system's request is kept as it names them, checked only
    #: for HQ (``reference_problem``), so its answer never says whether they exist.
    defender_id: int = Field(index=True)
    alarm_id: int | None = Field(default=None, index=True)
    purpose: str = Field(max_length=40, index=True)
    amount_hundredths: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    startup_grant_hundredths: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, nullable=True),
        description="A start-up grant in the same currency, on top of the amount.",
    )
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    state: str = Field(default=FundState.SUBMITTED.value, max_length=20, index=True)
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    created_by: str = Field(max_length=200)
    reference_problem: str | None = Field(
        default=None,
        sa_column=Column(Text, nullable=True),
        description="Why defender_id or alarm_id does not hold (shown to HQ only); such a "
        "request cannot be approved.",
    )

    @property
    def amount(self) -> Decimal:
        return from_hundredths(self.amount_hundredths)

    @property
    def startup_grant(self) -> Decimal | None:
        grant = self.startup_grant_hundredths
        return None if grant is None else from_hundredths(grant)

    @property
    def ref(self) -> str:
        """How messages name the request: ``F12`` is request 12 (alarms are ``A12``)."""
        return f"F{self.id}"


class FundRequestEvent(SQLModel, table=True):
    """One line of a request's audit trail: created, updated (which fields) or a state change.

    Written in the transaction that made the change, so the trail never misses one.
    """

    __tablename__ = "fundrequestevent"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="fundrequest.id", index=True)
    at: datetime = Field(default_factory=utc_now)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=20)  #: a FundAction
    from_state: str | None = Field(default=None, max_length=20)
    to_state: str | None = Field(default=None, max_length=20)
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
