"""The emergency fund: requests for relocation, information protection or security solutions.

A request goes submitted -> under_review -> approved or rejected -> disbursed (approved ones);
every change is in its ``history()``, with who made it.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from decimal import Decimal

from sdk._async_transport import AsyncResource
from sdk._base import NOT_GIVEN, NotGiven, QueryValue, alarm_key, given, path, payload, query
from sdk.models import (
    FundPurpose,
    FundRequest,
    FundRequestEvent,
    FundRequestIn,
    FundRequestUpdate,
    FundState,
    FundTransition,
    Page,
)

Amount = Decimal | int | str


def _filters(
    state: FundState | str | None,
    defender_id: int | None,
    purpose: FundPurpose | str | None,
    alarm_id: int | str | None,
) -> dict[str, QueryValue]:
    alarm = alarm_key(alarm_id) if alarm_id is not None else None
    return query(state=state, defender_id=defender_id, purpose=purpose, alarm_id=alarm)


class AsyncFundRequests(AsyncResource):
    """``client.fund_requests``: amounts are ``Decimal`` (pass ``Decimal("1200.00")`` or a
    string, never a float)."""

    async def create(
        self,
        *,
        defender_id: int,
        purpose: FundPurpose | str,
        amount: Amount,
        currency: str,
        alarm_id: int | str | None = None,
        startup_grant: Amount | None = None,
        description: str | None = None,
    ) -> FundRequest:
        """Submit a request; ``alarm_id`` links it to the alarm it follows."""
        alarm = alarm_key(alarm_id) if alarm_id is not None else None
        fields = given(alarm_id=alarm, startup_grant=startup_grant, description=description)
        model = FundRequestIn(
            defender_id=defender_id, purpose=purpose, amount=amount, currency=currency, **fields
        )
        return await self._api.fetch("POST", "/fund-requests", FundRequest, json=payload(model))

    async def get(self, request_id: int) -> FundRequest:
        return await self._api.fetch("GET", path("fund-requests", request_id), FundRequest)

    async def update(
        self,
        request_id: int,
        *,
        purpose: FundPurpose | str | None = None,
        amount: Amount | None = None,
        currency: str | None = None,
        startup_grant: Amount | NotGiven | None = NOT_GIVEN,
        description: str | None = None,
    ) -> FundRequest:
        """Change a request that is still submitted (afterwards the hub answers 409);
        ``startup_grant=None`` removes the grant."""
        fields = given(purpose=purpose, amount=amount, currency=currency, description=description)
        if not isinstance(startup_grant, NotGiven):
            fields["startup_grant"] = startup_grant
        sent = payload(FundRequestUpdate(**fields))
        url = path("fund-requests", request_id)
        return await self._api.fetch("PATCH", url, FundRequest, json=sent)

    async def list(
        self,
        *,
        state: FundState | str | None = None,
        defender_id: int | None = None,
        purpose: FundPurpose | str | None = None,
        alarm_id: int | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[FundRequest]:
        params = _filters(state, defender_id, purpose, alarm_id)
        params.update(query(limit=limit, cursor=cursor))
        return await self._api.fetch_page("/fund-requests", FundRequest, params)

    def iter(
        self,
        *,
        state: FundState | str | None = None,
        defender_id: int | None = None,
        purpose: FundPurpose | str | None = None,
        alarm_id: int | str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[FundRequest]:
        params = _filters(state, defender_id, purpose, alarm_id)
        params.update(query(limit=page_size))
        return self._api.paginate("/fund-requests", FundRequest, params)

    async def transition(
        self, request_id: int, state: FundState | str, *, note: str = ""
    ) -> FundRequest:
        """Move the request to ``state``; a move the workflow does not allow is a 409."""
        sent = payload(FundTransition(state=state, note=note))
        url = path("fund-requests", request_id, "transitions")
        return await self._api.fetch("POST", url, FundRequest, json=sent)

    async def start_review(self, request_id: int, *, note: str = "") -> FundRequest:
        return await self.transition(request_id, FundState.UNDER_REVIEW, note=note)

    async def approve(self, request_id: int, *, note: str = "") -> FundRequest:
        return await self.transition(request_id, FundState.APPROVED, note=note)

    async def reject(self, request_id: int, *, note: str = "") -> FundRequest:
        return await self.transition(request_id, FundState.REJECTED, note=note)

    async def disburse(self, request_id: int, *, note: str = "") -> FundRequest:
        return await self.transition(request_id, FundState.DISBURSED, note=note)

    async def history(self, request_id: int) -> builtins.list[FundRequestEvent]:
        """Every change to the request, oldest first: who, when, from which state to which."""
        url = path("fund-requests", request_id, "history")
        return await self._api.fetch_list(url, FundRequestEvent)
