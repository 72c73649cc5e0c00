"""Escalation policies: who is told, when, and on which condition.

A policy is a list of stages. Each stage names recipient roles (``hub.models.Role``), a delay and
a condition:

``immediately``     at alarm time + delay
``unacknowledged``  at alarm time + delay, only if nobody has acknowledged the alarm by then
``verified``        at HQ verification time + delay (never before HQ verifies)
``never``           kept in the policy but switched off

Press and public roles are used only for defenders who allow public broadcast themselves
(``Defender.allow_public_broadcast``): some defenders are endangered by publicity. They get the
public texts only: a stage that reaches them cannot have reminders (a reminder asks its reader
to acknowledge and shows the position).
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from sqlmodel import Session, select

from hub.models import PUBLIC_ROLES, Defender, EscalationPolicy, Role

DEFAULT_POLICY_NAME = "default"


class Condition(enum.StrEnum):
    IMMEDIATELY = "immediately"
    UNACKNOWLEDGED = "unacknowledged"
    VERIFIED = "verified"
    NEVER = "never"


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=60)
    roles: tuple[Role, ...] = Field(min_length=1)
    condition: Condition = Condition.IMMEDIATELY
    delay_s: int = Field(default=0, ge=0, le=7 * 24 * 3600)
    reminder_interval_s: int | None = Field(
        default=None,
        ge=30,
        description="Repeat to recipients who have not acknowledged (never press or public).",
    )

    @field_validator("roles")
    @classmethod
    def _no_participants(cls, roles: tuple[Role, ...]) -> tuple[Role, ...]:
        if Role.PARTICIPANT in roles:
            raise ValueError(
                "participant is not an escalation role: event participants get announcements "
                "and the training alarms of their own training wristband only"
            )
        return roles


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: tuple[Stage, ...] = Field(min_length=1)
    silence_grace_s: int = Field(
        default=120, ge=0, description="Heartbeat interval plus this, then the device is silent."
    )
    notify_contacts_on_silence: bool = Field(
        default=False, description="Tell trusted contacts too, not only HQ, of a silent device."
    )
    low_battery_percent: int = Field(default=15, ge=0, le=100)

    @field_validator("stages")
    @classmethod
    def _names_unique(cls, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
        names = [stage.name for stage in stages]
        if len(names) != len(set(names)):
            raise ValueError("stage names must be unique")
        return stages

    @model_validator(mode="after")
    def _no_reminders_to_public_roles(self, info: ValidationInfo) -> PolicyDocument:
        """A reminder asks its reader to acknowledge and shows the position: never to a press
        or public channel. A policy stored before this rule still loads (``STORED``); the hub
        never reminds those roles anyway (``Lifecycle.run_reminder``)."""
        if isinstance(info.context, dict) and info.context.get(STORED):
            return self
        for stage in self.stages:
            public = ", ".join(role.value for role in stage.roles if role in PUBLIC_ROLES)
            if stage.reminder_interval_s is not None and public:
                raise ValueError(
                    f"stage {stage.name!r} has reminders but reaches {public}: reminders cannot "
                    "go to press or public channels; remove reminder_interval_s or put "
                    f"{public} in a stage of their own"
                )
        return self


#: What a new installation does: HQ, trusted contacts and nearby responders at once (reminded
#: every 5 minutes); partners and embassies after 10 minutes without acknowledgement; press and
#: public channels only after HQ verification, and only for defenders who allow it.
DEFAULT_POLICY = PolicyDocument(
    stages=(
        Stage(
            name="first",
            roles=(Role.HQ, Role.TRUSTED, Role.NEARBY),
            reminder_interval_s=300,
        ),
        Stage(
            name="partners",
            roles=(Role.PARTNER, Role.EMBASSY),
            condition=Condition.UNACKNOWLEDGED,
            delay_s=600,
        ),
        Stage(name="public", roles=(Role.PRESS, Role.PUBLIC), condition=Condition.VERIFIED),
    )
)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the problem."""


#: Validation context of a policy read back from the database (written under older rules).
STORED = "stored"


def parse_policy(data: dict[str, Any], *, stored: bool = False) -> PolicyDocument:
    """Validate a policy; ``stored``: one the database already holds, checked leniently where
    a newer rule would refuse what an older version accepted (the hub must still run it)."""
    try:
        return PolicyDocument.model_validate(data, context={STORED: stored})
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors(include_input=False))
        raise PolicyError(f"invalid escalation policy: {problems}") from None


def _problem(error: ErrorDetails) -> str:
    """``stages.0.delay_s: Input should be ...``; a rule about the whole policy without a key."""
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_policy_file(path: Path) -> PolicyDocument:
    """A policy from a TOML or JSON file (see ``examples/operator/policy.toml``)."""
    import tomllib

    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from None
    return parse_policy(data)


def policy_for(session: Session, defender: Defender) -> PolicyDocument:
    """The defender's own policy, else the organisation's ``default``, else the built-in one."""
    row = session.get(EscalationPolicy, defender.policy_id) if defender.policy_id else None
    if row is None:
        row = session.exec(
            select(EscalationPolicy).where(EscalationPolicy.name == DEFAULT_POLICY_NAME)
        ).first()
    return parse_policy(row.document, stored=True) if row is not None else DEFAULT_POLICY


def save_policy(session: Session, name: str, policy: PolicyDocument) -> EscalationPolicy:
    row = session.exec(select(EscalationPolicy).where(EscalationPolicy.name == name)).first()
    document = policy.model_dump(mode="json")
    if row is None:
        row = EscalationPolicy(name=name, document=document)
    else:
        row.document = document
    session.add(row)
    session.flush()
    return row
