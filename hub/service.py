"""The hub service: wires the store, the plugins, the dispatcher, the timers, the MQTT connection
and the acknowledgement web server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from devicekit.protocol import AckStage
from hub.actions import AlarmActions
from hub.admission import Admission
from hub.clock import Clock, SystemClock
from hub.config import HubConfig, egress_policy
from hub.database import AsyncStore
from hub.db import make_engine
from hub.dispatch import Dispatcher
from hub.health import Health, write_alive_file
from hub.ingest import Ingest, Rejection, StorageUnavailable
from hub.lanes import Lane, Priority, current_lane
from hub.lifecycle import Lifecycle, LifecycleSettings
from hub.logs import pin_library_loggers
from hub.mqtt import HubConnection
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.retention import apply_retention
from hub.retry import RetryPolicy
from hub.sealing import configured_keyring
from hub.store import AlarmOutcome, Store
from hub.webhooks.sender import WebhookSender

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from hub.web import WebServer

log = logging.getLogger(__name__)

#: The database lane of the reports about refused messages (hub/admission.py).
REFUSAL_SUMMARIES = Lane(Priority.REFUSAL, "hub")


def lifecycle_for(config: HubConfig) -> Lifecycle:
    public_url = config.http.public_url if config.http.enabled else None
    return Lifecycle(
        LifecycleSettings(
            ack_base_url=public_url,
            responder_max_age=timedelta(seconds=config.responders.max_age_s),
            ack_link_grace=timedelta(seconds=config.http.ack_link_grace_s),
        )
    )


class Hub:
    def __init__(
        self,
        config: HubConfig,
        registry: NotifierRegistry | None = None,
        ready_file: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        pin_library_loggers()
        self.config = config
        self.ready_file = ready_file
        self.clock = clock or SystemClock()
        if registry is None:
            pm = get_plugin_manager(load_entry_points=config.load_entry_points)
            registry = NotifierRegistry.from_plugins(pm, config.plugins)
        self.registry = registry
        lifecycle = lifecycle_for(config)
        #: Seals positions and secrets in the database; no keys, no hub (hub/sealing.py).
        self.keyring = configured_keyring(config.storage)
        engine = make_engine(config.database.url, self.keyring)
        retry = RetryPolicy.from_config(config.delivery)
        tolerance = config.security.clock_tolerance_s
        self.db = AsyncStore(Store(engine, lifecycle, self.clock, retry, tolerance))
        self.actions = AlarmActions(self.db.store.engine, lifecycle, self.clock)
        self.admission = Admission(config.admission)
        self.ingest = Ingest(
            self.db, self._alarm_stored, self._rejected, self._storage_failed, self.admission
        )
        self.egress = egress_policy(config)
        self.dispatcher = Dispatcher(
            self.db, registry, config.delivery.timeout_s, self._alarm_notified, egress=self.egress
        )
        self.connection = HubConnection(
            config.broker, self.ingest.handle, self.ingest.handle_retained
        )
        #: Its own thread and engine: webhooks never queue behind the alarm path's database.
        self.webhooks = WebhookSender(
            config.webhooks,
            config.database.url,
            self.clock,
            config.timers.tick_s,
            self.keyring,
            egress=self.egress,
        )
        self._stop = asyncio.Event()
        self._wake_timers = asyncio.Event()
        #: Completed rounds of the timer loop (tests wait for a round instead of sleeping).
        self.rounds = 0
        self._fatal: Exception | None = None
        self._last_round_at: datetime | None = None
        self._database_ok = False
        self._api_engine: Engine | None = None

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when installed by the CLI)."""
        self._quiet_storage_failures()
        tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self._timer_loop(), name="timers"),
            asyncio.create_task(self.webhooks.run(), name="webhooks"),
            asyncio.create_task(self._retention_loop(), name="retention"),
            asyncio.create_task(self._refusal_summaries(), name="refusal-summaries"),
        ]
        web = self._web_server()
        web_task = asyncio.create_task(self._serve_web(web), name="web") if web else None
        try:
            await self.connection.connect()
            if self.ready_file is not None:
                self.ready_file.write_text(f"{os.getpid()}\n")
            log.info(
                "hub running; notifiers: %s",
                ", ".join(sorted(n.name for n in self.registry.notifiers)),
            )
            await self._stop.wait()
        finally:
            if web is not None and web_task is not None:
                from hub.api.routes.stream import close_streams

                close_streams(web.config.app)  # the server waits for open responses to end
                web.should_exit = True
                await asyncio.wait({web_task}, timeout=10)  # closes its listening socket
            if self._api_engine is not None:
                self._api_engine.dispose()
            with contextlib.suppress(Exception):
                await self.connection.disconnect()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.dispatcher.drain()
            await self._report_refusals(everything=True)
            await self.webhooks.aclose()
            self.db.close()
            if self.ready_file is not None:
                self.ready_file.unlink(missing_ok=True)
            if self.config.health.file is not None:
                self.config.health.file.unlink(missing_ok=True)
            log.info("hub stopped")
        if self._fatal is not None:
            raise self._fatal

    def stop(self) -> None:
        self._stop.set()

    @staticmethod
    def _quiet_storage_failures() -> None:
        """gmqtt reports a handler's exception through the loop's exception handler, with a
        traceback per message. A failed store is already logged once, without payload, by
        ``hub.ingest``: the rest of the report is noise during a database outage."""
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if isinstance(context.get("exception"), StorageUnavailable):
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def wake(self) -> None:
        """Run timers, supervision and the device-ack outbox now (e.g. after an HQ action)."""
        self._wake_timers.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    def _web_server(self) -> WebServer | None:
        if not self.config.http.enabled:
            return None
        from hub.acklinks import GuessLimiter
        from hub.api.context import ApiContext
        from hub.web import create_app, make_server

        loop = asyncio.get_running_loop()

        def changed() -> None:  # called from the API's worker threads
            loop.call_soon_threadsafe(self.wake)

        # Its own pool, not the alarm path's.
        self._api_engine = make_engine(self.config.database.url, self.keyring)
        api = ApiContext(
            engine=self._api_engine,
            registry=self.registry,
            broker_data_dir=self.config.broker.data_dir,
            lifecycle=self.actions.lifecycle,
            clock=self.clock,
            on_change=changed,
            egress=self.egress,
        )
        http = self.config.http
        window = timedelta(seconds=http.ack_link_misses_window_s)
        guesses = GuessLimiter(http.ack_link_misses, window, self.clock)
        app = create_app(self.db, self.actions, self.wake, self.health, api, guesses)
        return make_server(app, self.config.http.host, self.config.http.port)

    async def _serve_web(self, web: WebServer) -> None:
        try:
            await web.serve()
        except SystemExit:  # uvicorn's way of saying it could not start
            http = self.config.http
            self._fatal = RuntimeError(
                f"the hub's web server cannot listen on {http.host}:{http.port} (in use?); "
                "change [http] port or stop the other program"
            )
            log.error("%s", self._fatal)
            self.stop()

    async def _retention_loop(self) -> None:
        """Erase old positions now and every ``[retention] run_every_s`` (hub/retention.py), on a
        worker thread: a large erase never holds up the alarm path's database thread."""
        settings = self.config.retention
        while True:
            try:
                await asyncio.to_thread(
                    apply_retention,
                    self.db.store.engine,
                    self.clock.now(),
                    timedelta(days=settings.positions_days),
                )
            except SQLAlchemyError as exc:
                log.error("retention: database error (%s); retrying later", type(exc).__name__)
            await asyncio.sleep(settings.run_every_s)

    async def _refusal_summaries(self) -> None:
        """Every second, report to HQ the refusal windows that ended (hub/admission.py)."""
        while True:
            await asyncio.sleep(1.0)
            await self._report_refusals()

    async def _report_refusals(self, everything: bool = False) -> None:
        current_lane.set(REFUSAL_SUMMARIES)  # behind alarms and telemetry on the database thread
        for summary in self.admission.close_due(everything):
            try:
                await self.db.run(self.db.store.record_refusal_summary, summary)
            except SQLAlchemyError as exc:  # counts of junk only: never worth an outage
                log.error(
                    "cannot store the summary of %d refused messages of %s (%s)",
                    summary.count,
                    summary.account.label,
                    type(exc).__name__,
                )
                continue
            except Exception:  # a bug here must not stop the next summaries, nor a shutdown
                log.exception("cannot store the summary of refused messages")
                continue
            self.dispatcher.kick()

    async def _timer_loop(self) -> None:
        """Timers, silent devices and device acks. Timers are rows: a restart loses nothing."""
        while True:
            self._wake_timers.clear()
            try:
                result = await self.db.run(self.actions.tick)
                self._database_ok = True
                if result.timers_run or result.silent_devices:
                    self.dispatcher.kick()
                await self._publish_device_acks()
            except SQLAlchemyError as exc:
                self._database_ok = False
                log.error("timer round: database error (%s); retrying", type(exc).__name__)
            except Exception:
                log.exception("timer round failed; retrying at the next tick")
            self._last_round_at = datetime.now(UTC)
            self._write_alive_file()
            self.rounds += 1
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see Dispatcher.run
                async with asyncio.timeout(self.config.timers.tick_s):
                    await self._wake_timers.wait()
            self.dispatcher.kick()
            self.webhooks.kick()

    def health(self) -> Health:
        return Health(
            checked_at=datetime.now(UTC),
            broker_connected=self.connection.connected.is_set(),
            database_ok=self._database_ok,
            last_round_at=self._last_round_at,
            stale_after_s=self.config.health.stale_after_s,
            oldest_unacked_s=self.connection.unacknowledged.oldest_age_s(),
            unacked_messages=len(self.connection.unacknowledged),
            max_unacked_age_s=self.config.health.max_unacked_age_s,
            internal_errors=self.ingest.counts.internal_errors,
            stale_telemetry=self.ingest.counts.stale_telemetry,
        )

    def _write_alive_file(self) -> None:
        if self.config.health.file is None:
            return
        try:
            write_alive_file(self.config.health.file, self.health())
        except OSError as exc:
            log.error("cannot write the alive file %s: %s", self.config.health.file, exc)

    async def _publish_device_acks(self) -> None:
        if not self.connection.connected.is_set():
            return
        pending = await self.db.run(self.actions.pending_device_acks)
        published = [
            ack.id
            for ack in pending
            if self.connection.publish_ack(
                ack.device_id, ack.alarm_id, AckStage(ack.stage), ack.key
            )
        ]
        await self.db.run(self.actions.mark_device_acks_sent, published)

    async def _alarm_stored(self, outcome: AlarmOutcome) -> None:
        self.connection.publish_ack(
            outcome.device_id, outcome.alarm_id, outcome.ack_stage, outcome.device_key
        )
        if outcome.created:
            self.dispatcher.kick()

    async def _rejected(self, rejection: Rejection) -> None:
        self.dispatcher.kick()

    def _storage_failed(self) -> None:
        self.connection.request_redelivery()

    async def _alarm_notified(self, alarm_pk: int) -> None:
        self.wake()
