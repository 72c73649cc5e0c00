"""Send the outbox: every due delivery in its own task, each cut off by a timeout.

One slow or hanging channel never delays another; every result, including a timeout or a
plugin's exception, is recorded on the delivery row. What a failure leads to (a retry later,
the next channel, a dead letter to HQ) is decided by ``Store.finish_delivery`` with the policy
of ``hub.retry``. Every round first takes back what a stopped hub left mid-send (its lease
expired), then claims what is due; a database error costs a round, never the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable

from hub.database import AsyncStore
from hub.deliveries import DeliveryJob
from hub.egress import EgressPolicy, guarded
from hub.plugin_api import DeliveryResult, InvalidChannelURL, Notification, Notifier, url_scheme
from hub.plugin_manager import NotifierRegistry

log = logging.getLogger(__name__)

#: Deliveries claimed per round, and the most sends in flight before claiming more.
CLAIM_BATCH = 100
MAX_IN_FLIGHT = 4 * CLAIM_BATCH


async def send_with_timeout(
    notifier: Notifier,
    notification: Notification,
    timeout: float,  # noqa: ASYNC109
) -> DeliveryResult:
    """Call ``notifier.send`` (async, or sync in a thread) and turn every outcome into a result.

    The notification carries ``timeout`` so the plugin can bound its own socket timeouts by it.
    """
    if notification.timeout_s is None:
        notification = dataclasses.replace(notification, timeout_s=timeout)
    try:
        async with asyncio.timeout(timeout):
            if inspect.iscoroutinefunction(notifier.send):
                result = await notifier.send(notification)
            else:
                result = await asyncio.to_thread(notifier.send, notification)
                if inspect.isawaitable(result):
                    result = await result
    except TimeoutError:
        return DeliveryResult.failure(f"timed out after {timeout:g} s")
    except Exception as exc:
        log.exception(
            "notifier %s raised on a message about %s", notifier.name, notification.alarm_ref
        )
        text = str(exc).replace(notification.url, "<channel url>")[:300]
        return DeliveryResult.failure(f"{notifier.name} raised {type(exc).__name__}: {text}")
    if not isinstance(result, DeliveryResult):
        return DeliveryResult.failure(
            f"{notifier.name} returned {type(result).__name__}, not a DeliveryResult"
        )
    return result


class Dispatcher:
    """Claims pending deliveries and sends them; ``kick()`` wakes it after a commit."""

    def __init__(
        self,
        db: AsyncStore,
        registry: NotifierRegistry,
        timeout: float,
        on_alarm_notified: Callable[[int], Awaitable[None]],
        poll_interval: float = 2.0,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.db = db
        #: Where sends may connect (hub/egress.py); None: anywhere (tests of the dispatcher).
        self.egress = egress
        self.registry = registry
        self.timeout = timeout
        self.on_alarm_notified = on_alarm_notified
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def kick(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                started = await self.start_round()
            except Exception:
                log.exception("dispatch round failed; trying again in %g s", self.poll_interval)
            else:
                # A full batch means more is due: claim again now, as long as the sends in
                # flight stay bounded (queued behind busy workers they would eat their timeout).
                if len(started) >= CLAIM_BATCH and len(self._tasks) < MAX_IN_FLIGHT:
                    await asyncio.sleep(0)
                    continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the task's
            # cancellation when the event is set at the same moment, and the hub never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wakeup.wait()

    async def start_round(self) -> list[asyncio.Task[None]]:
        """Take back interrupted sends, claim what is due, and start one task per delivery."""
        requeued = await self.db.run(self.db.store.requeue_interrupted)
        if requeued:
            log.warning("re-sending %d deliveries whose hub stopped mid-send", requeued)
        started = []
        for job in await self.db.run(self.db.store.claim_pending, CLAIM_BATCH):
            task = asyncio.create_task(self._deliver(job), name=f"delivery-{job.delivery_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def run_once(self) -> int:
        """One round, awaited to the end (tests, tools); returns how many sends it made."""
        started = await self.start_round()
        await asyncio.gather(*started)
        return len(started)

    async def drain(self) -> None:
        """Wait for the sends in flight (used on shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _deliver(self, job: DeliveryJob) -> None:
        notification = job.notification
        try:
            notifier = self.registry.for_url(notification.url)
        except InvalidChannelURL as exc:
            result = DeliveryResult.failure(str(exc), permanent=True)
            scheme = "?"
        else:
            scheme = url_scheme(notification.url)
            with guarded(self.egress):  # every socket the plugin opens is checked
                result = await send_with_timeout(notifier, notification, self.timeout)
        log.info(
            "delivery %s (%s, %s://): %s",
            job.delivery_id,
            notification.alarm_ref,
            scheme,
            "ok" if result.ok else "failed",
        )
        try:
            completed = await self.db.run(
                self.db.store.finish_delivery, job.delivery_id, result, job.attempt
            )
        except Exception:
            # The row stays "sending": once its lease expires it is sent again (at-least-once).
            log.exception("cannot record the result of delivery %s", job.delivery_id)
            return
        if completed and job.alarm_pk is not None:
            await self.on_alarm_notified(job.alarm_pk)
