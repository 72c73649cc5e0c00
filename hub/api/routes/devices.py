"""``/v1/devices``: wristbands. Registering one creates its broker account; the password is in
that response only (the broker keeps a hash)."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, status
from fastapi import Path as PathParam
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from devicekit.protocol import ID_RE
from hub import admin
from hub.admin import add_device
from hub.api.context import ApiContext
from hub.api.errors import Conflict
from hub.api.pagination import BadCursor, Cursor, Limit
from hub.api.routes._common import (
    Context,
    DbSession,
    OperationsReader,
    OperationsWriter,
    QueryId,
    domain_errors,
    get_or_404,
)
from hub.api.tokens import Principal
from hub.models import Device as DeviceRow
from sdk.models import Device, DeviceCredentials, DeviceIn, DeviceResumed, Page

log = logging.getLogger(__name__)

router = APIRouter(prefix="/devices", tags=["devices"])

#: Only what a device id can be (``devicekit.topics``); anything else is a 422.
DeviceId = Annotated[str, PathParam(pattern=ID_RE.pattern)]

#: One registration at a time in this hub: the broker account is written before the row is
#: committed, so two concurrent registrations of one id could leave the winner with the loser's
#: password.
_registering = threading.Lock()


@router.get("", response_model=Page[Device], summary="Wristbands, lowest id first")
def list_devices(
    session: DbSession,
    _: OperationsReader,
    defender_id: QueryId = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[Device]:
    # Device ids are strings, so the cursor is the last id itself (the shared paginator's
    # cursors are integers).
    query = select(DeviceRow)
    if defender_id is not None:
        query = query.where(DeviceRow.defender_id == defender_id)
    if cursor is not None:
        query = query.where(col(DeviceRow.id) > _decode(cursor))
    rows = list(session.exec(query.order_by(col(DeviceRow.id)).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page[Device](
        items=[Device.model_validate(row) for row in rows],
        next_cursor=_encode(rows[-1].id) if more else None,
    )


@router.post(
    "",
    response_model=DeviceCredentials,
    status_code=status.HTTP_201_CREATED,
    summary="Register a wristband and create its broker account; the password is shown once",
    responses={409: {"description": "The id is already a device or another broker account"}},
)
def register_device(
    body: DeviceIn, ctx: Context, session: DbSession, _: OperationsWriter
) -> DeviceCredentials:
    with _registering:
        try:
            with domain_errors():
                creds = add_device(
                    ctx.engine,
                    body.id,
                    body.defender_id,
                    ctx.broker_data_dir,
                    encrypt=body.encrypt,
                )
        except IntegrityError:  # another hub on the same database registered it meanwhile
            raise Conflict(f"{body.id!r} was registered meanwhile") from None
    return DeviceCredentials(
        device_id=creds.device_id,
        password=creds.password,
        key=creds.key,
        broker_reloaded=creds.broker_reloaded,
    )


@router.get("/{device_id}", response_model=Device)
def get_device(device_id: DeviceId, session: DbSession, _: OperationsReader) -> Device:
    return Device.model_validate(get_or_404(session, DeviceRow, device_id, "device"))


@router.post(
    "/{device_id}/suspend",
    response_model=Device,
    summary="Stop a wristband at once: broker account removed, connection closed",
)
def suspend_device(
    device_id: DeviceId, ctx: Context, session: DbSession, principal: OperationsWriter
) -> Device:
    """For a lost or seized wristband. What still arrives from it is refused and kept for HQ."""
    return _stop(ctx, session, device_id, principal, admin.suspend_device)


@router.post(
    "/{device_id}/revoke",
    response_model=Device,
    summary="Suspend a wristband and revoke its certificate for good",
)
def revoke_device(
    device_id: DeviceId, ctx: Context, session: DbSession, principal: OperationsWriter
) -> Device:
    return _stop(ctx, session, device_id, principal, admin.revoke_device)


@router.post(
    "/{device_id}/resume",
    response_model=DeviceResumed,
    summary="Bring a suspended wristband back with a new broker password (shown once)",
    responses={409: {"description": "The device is active, or revoked: re-provision it"}},
)
def resume_device(
    device_id: DeviceId, ctx: Context, session: DbSession, principal: OperationsWriter
) -> DeviceResumed:
    """Undoes suspend: active again, a new password, its certificate off hold. The signing key
    stays. A revoked device cannot be resumed: it needs a new identity
    (``natalia device provision ID --rekey``)."""
    get_or_404(session, DeviceRow, device_id, "device")
    try:
        done = admin.resume_device(ctx.engine, device_id, ctx.broker_data_dir)
    except admin.AdminError as exc:
        raise Conflict(str(exc)) from None
    log.warning("device %s resumed by %s", device_id, principal.actor)
    return DeviceResumed(
        device_id=done.device_id,
        password=done.password,
        certificate_released=done.certificate_serial is not None,
        broker_reloaded=done.broker_reloaded,
    )


def _stop(
    ctx: ApiContext,
    session: Session,
    device_id: str,
    principal: Principal,
    stop: Callable[[Engine, str, Path | None], admin.DeviceSuspension],
) -> Device:
    get_or_404(session, DeviceRow, device_id, "device")
    with domain_errors():
        stop(ctx.engine, device_id, ctx.broker_data_dir)
    log.warning("device %s stopped (%s) by %s", device_id, stop.__name__, principal.actor)
    session.expire_all()
    return Device.model_validate(get_or_404(session, DeviceRow, device_id, "device"))


def _encode(device_id: str) -> str:
    return base64.urlsafe_b64encode(f"d1:{device_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    version, _, device_id = raw.partition(":")
    if version != "d1" or not device_id:
        raise BadCursor("this cursor is not valid; use next_cursor from the last page")
    return device_id
