"""The webhook loop inside the hub: fan out new events, claim what is due, POST it, record it.

Runs next to the notifier dispatcher, woken by the hub's timer loop (and polling on its own every
``poll_interval``). Database work runs on this loop's own thread and engine, so webhooks never
queue behind the alarm path's database thread; sends run concurrently on one
``httpx.AsyncClient``, at most ``concurrency`` in all and ``PER_WEBHOOK`` per subscription, each
cut off after ``timeout_s``. Logs name deliveries and subscriptions by id only: URLs may hold
credentials, and bodies hold positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import httpx
from sqlalchemy.exc import SQLAlchemyError

from hub.clock import Clock
from hub.config import WebhooksConfig
from hub.db import make_engine
from hub.deliveries import new_instance_id
from hub.egress import EgressPolicy, EgressRefused, guarded
from hub.retry import RetryPolicy
from hub.sealing import Keyring
from hub.webhooks import signing
from hub.webhooks.fanout import Fanout
from hub.webhooks.outbox import Outcome, WebhookJob, WebhookOutbox

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: Sends in flight to one subscription: a slow receiver never takes every slot.
PER_WEBHOOK = 4
#: The shortest time between two rounds (the timer loop may kick many times a second).
MIN_ROUND_GAP_S = 0.05


def policy_for(config: WebhooksConfig) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=config.max_attempts,
        backoff_base_s=config.backoff_base_s,
        backoff_cap_s=config.backoff_cap_s,
        deadline_s=config.deadline_s,
        lease_s=2 * config.timeout_s,
    )


async def post(client: httpx.AsyncClient, job: WebhookJob, timeout: float) -> Outcome:  # noqa: ASYNC109
    """One signed attempt. Redirects are not followed (a 3xx is a failure, like any non-2xx);
    the answer's body is not read."""
    headers = signing.headers(
        [job.secret], int(time.time()), job.body, job.event_id, job.event_type, job.delivery_id
    )
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", job.url, content=job.body, headers=headers) as answer:
                status, reason = answer.status_code, answer.reason_phrase
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(False, None, f"timed out after {timeout:g} s")
    except httpx.HTTPError as exc:
        refused = _egress_refusal(exc)
        if refused is not None:  # an internal address (hub/egress.py): say so, not "no answer"
            return Outcome(False, None, str(refused)[:1000])
        return Outcome(False, None, f"no answer: {type(exc).__name__}")
    detail = f"HTTP {status} {reason}".strip()
    if 300 <= status < 400:
        detail += " (redirects are not followed: give the webhook its final URL)"
    return Outcome(200 <= status < 300, status, detail)


def _egress_refusal(exc: BaseException) -> EgressRefused | None:
    """The refusal of an internal address somewhere in ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(10):  # httpx wraps httpcore wraps anyio wraps the socket's error
        if seen is None or isinstance(seen, EgressRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class WebhookSender:
    def __init__(
        self,
        config: WebhooksConfig,
        database_url: str,
        clock: Clock,
        poll_interval: float,
        keyring: Keyring | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.config = config
        #: Where POSTs may connect, checked on the resolved address (hub/egress.py).
        self.egress = egress
        self.poll_interval = poll_interval
        self.engine = make_engine(database_url, keyring)  # bodies are sealed (hub/sealing.py)
        self.fanout = Fanout(self.engine, clock)
        self.outbox = WebhookOutbox(self.engine, clock, policy_for(config), new_instance_id())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="natalia-webhooks")
        self._wakeup = asyncio.Event()
        self._sends: dict[asyncio.Task[None], WebhookJob] = {}
        self._client: httpx.AsyncClient | None = None

    def kick(self) -> None:
        """Look for new events and due retries now."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                await self.start_round()
            except SQLAlchemyError as exc:
                log.error("webhooks: database error (%s); retrying", type(exc).__name__)
            except Exception:
                log.exception("webhook round failed; retrying at the next tick")
            await asyncio.sleep(MIN_ROUND_GAP_S)  # a burst of kicks is one round, not hundreds
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives as the event is set, and the hub's shutdown would wait for this forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wakeup.wait()

    async def start_round(self) -> list[asyncio.Task[None]]:
        """Take back interrupted sends, fan out new events, start the sends that are due."""
        in_flight = frozenset(job.delivery_id for job in self._sends.values())
        requeued = await self._db(self.outbox.requeue_interrupted, in_flight)
        if requeued:
            log.warning("re-sending %d webhook deliveries whose hub stopped mid-send", requeued)
        await self._db(self.fanout.fan_out)
        room = self.config.concurrency - len(self._sends)
        if room <= 0:
            return []
        busy = Counter(job.webhook_id for job in self._sends.values())
        started = []
        for job in await self._db(self.outbox.claim, room, PER_WEBHOOK, busy):
            task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.delivery_id}")
            self._sends[task] = job
            task.add_done_callback(self._sent)
            started.append(task)
        return started

    async def run_once(self) -> int:
        """One round, awaited to the end (tests, tools); returns how many sends it made."""
        started = await self.start_round()
        await asyncio.gather(*started)
        return len(started)

    async def aclose(self) -> None:
        """Wait for the sends in flight (each bounded by the timeout), then let go of
        everything."""
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        try:  # a round stopped between its claim and its sends
            await self._db(self.outbox.release_unsent)
        except SQLAlchemyError as exc:
            log.error("webhooks: cannot release unsent claims (%s)", type(exc).__name__)
        if self._client is not None:
            await self._client.aclose()
        self._executor.shutdown(wait=True)
        self.engine.dispose()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.pop(task, None)
        self.kick()  # a slot is free: more may be waiting

    async def _deliver(self, job: WebhookJob) -> None:
        with guarded(self.egress):
            outcome = await post(self._http(), job, self.config.timeout_s)
        try:
            status = await self._db(self.outbox.finish, job, outcome)
        except Exception:
            # The row stays "sending": once its lease runs out it is sent again.
            log.exception("cannot record the result of webhook delivery %s", job.delivery_id)
            return
        log.info(
            "webhook delivery %s (webhook %s, %s, attempt %s): %s -> %s",
            job.delivery_id,
            job.webhook_id,
            job.event_type,
            job.attempt,
            outcome.detail,
            status,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.config.timeout_s,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.config.concurrency),
            )
        return self._client

    async def _db(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )
