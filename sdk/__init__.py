"""Python SDK for the Natalia hub's HTTP API: alarms, defenders, devices, the emergency fund and
Defenders' Days, with typed models (``sdk.models``) and one error hierarchy (``sdk.errors``).

::

    from sdk import Client

    with Client("https://hub.example.org", token) as client:
        for alarm in client.alarms.iter(state="notified"):
            client.alarms.acknowledge(alarm.id, note="HQ on it")

``AsyncClient`` has the same methods for ``async`` code. It needs only pydantic and httpx
(``pip install 'natalia[sdk]'``); see ``sdk/README.md``.
"""

from sdk._async_client import AsyncClient
from sdk._async_stream import AsyncAlarmEventStream
from sdk._base import DEFAULT_TIMEOUT, NOT_GIVEN, NotGiven, Retries
from sdk._client import Client
from sdk._stream import AlarmEventStream
from sdk._version import __version__
from sdk.errors import (
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NataliaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UnprocessableEntityError,
)
from sdk.models import Page

__all__ = [
    "DEFAULT_TIMEOUT",
    "NOT_GIVEN",
    "APIError",
    "APITimeoutError",
    "AlarmEventStream",
    "AsyncAlarmEventStream",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "InvalidRequestError",
    "NataliaError",
    "NotFoundError",
    "NotGiven",
    "Page",
    "PermissionDeniedError",
    "RateLimitError",
    "Retries",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "__version__",
]
