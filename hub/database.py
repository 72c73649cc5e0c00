"""Run the synchronous store on one dedicated thread, so the event loop never blocks on disk.

One thread is also SQLite's one writer; PostgreSQL deployments scale by running more hubs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from hub.store import Store

P = ParamSpec("P")
T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="natalia-db")

    async def run(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``method(*args, **kwargs)`` executed on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(method, *args, **kwargs)
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.store.engine.dispose()
