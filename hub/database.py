"""Run the synchronous store on one dedicated thread, so the event loop never blocks on disk.

One thread is also SQLite's one writer; PostgreSQL deployments scale by running more hubs.

The thread serves work by priority, never first come first served: a flood of telemetry or of
refused messages from one account must not make an alarm wait. Each job runs in a *lane*, a
priority class and an account (the device or phone it came from). The thread takes alarm work
(alarms, cancels, and the hub's own work: deliveries, timers, the API) before telemetry, and
telemetry before refusals; within a class it takes one job per account in turn, so one
account's backlog never sits ahead of another account's single message; within an account,
jobs run in the order they came. The lane of a job is the caller's ``current_lane``, which
the ingest sets for each message it handles (hub/lanes.py, hub/admission.py).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import ParamSpec, TypeVar

from hub.lanes import Lane, Priority, current_lane
from hub.store import Store

P = ParamSpec("P")
T = TypeVar("T")


_Job = tuple[Future[object], Callable[[], object]]


class LaneQueue:
    """Jobs waiting for the database thread: by priority, then round robin over accounts."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._lanes: dict[Priority, OrderedDict[str, deque[_Job]]] = {
            priority: OrderedDict() for priority in Priority
        }
        self._closed = False

    def put(self, lane: Lane, job: _Job) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError("the database thread is stopped: no more work is taken")
            self._lanes[lane.priority].setdefault(lane.account, deque()).append(job)
            self._ready.notify()

    def take(self) -> _Job | None:
        """The next job, waiting for one; None once closed and empty."""
        with self._ready:
            while True:
                for accounts in self._lanes.values():
                    if accounts:
                        account, jobs = next(iter(accounts.items()))
                        job = jobs.popleft()
                        if jobs:
                            accounts.move_to_end(account)  # the others' turn first
                        else:
                            del accounts[account]
                        return job
                if self._closed:
                    return None
                self._ready.wait()

    def close(self) -> None:
        """Take no more jobs; the thread finishes those already queued."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue = LaneQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    async def run(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``method(*args, **kwargs)`` executed on the database thread, in the caller's
        ``current_lane``."""
        future: Future[object] = Future()
        self._queue.put(current_lane.get(), (future, functools.partial(method, *args, **kwargs)))
        self._start()
        result = await asyncio.wrap_future(future)
        return result  # type: ignore[return-value]  # the future holds method's T

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="natalia-db", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while (job := self._queue.take()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller, as an executor does
                future.set_exception(exc)

    def close(self) -> None:
        """Finish the queued work, stop the thread and close the engine's connections."""
        self._queue.close()
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        self.store.engine.dispose()
