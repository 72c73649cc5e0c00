"""Fund rows as wire models (``sdk.models``), for the API and the webhook source."""

from __future__ import annotations

from hub.fund.tables import FundRequest as FundRequestRow
from hub.fund.tables import FundRequestEvent as FundRequestEventRow
from hub.fund.tables import aware
from sdk.models import FundPurpose, FundRequest, FundRequestEvent, FundState


def as_fund_request(row: FundRequestRow, *, for_hq: bool = True) -> FundRequest:
    """``for_hq`` False (a partner system, a webhook): without ``reference_problem``, which
    would tell whether the defender and alarm it names exist and belong together."""
    assert row.id is not None
    return FundRequest(
        id=row.id,
        defender_id=row.defender_id,
        alarm_id=row.alarm_id,
        purpose=FundPurpose(row.purpose),
        amount=row.amount,
        currency=row.currency,
        startup_grant=row.startup_grant,
        description=row.description,
        state=FundState(row.state),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        created_by=row.created_by,
        reference_problem=row.reference_problem if for_hq else None,
    )


def as_fund_event(row: FundRequestEventRow, actor: str | None = None) -> FundRequestEvent:
    """``actor``: who to show instead of the row's own (a partner sees HQ's people as "hq")."""
    assert row.id is not None
    return FundRequestEvent(
        id=row.id,
        request_id=row.request_id,
        at=aware(row.at),
        actor=actor if actor is not None else row.actor,
        action=row.action,
        from_state=FundState(row.from_state) if row.from_state else None,
        to_state=FundState(row.to_state) if row.to_state else None,
        note=row.note,
    )
