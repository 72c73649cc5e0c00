"""A running hub with a fake clock, a real broker, a real SMTP server and a real HTTP receiver:
the stage on which the escalation rules are tested."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicekit.protocol import AlarmKind
from hub import admin
from hub.actions import AlarmActions
from hub.clock import FakeClock
from hub.models import Alarm, Delivery, Role
from hub.plugin_manager import NotifierRegistry, get_plugin_manager
from hub.service import lifecycle_for
from hub.store import Store
from tests.support.brokers import RunningBroker
from tests.support.device import RawDevice, make_alarm
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.receivers import HTTPReceiver, SMTPReceiver, wait_until

#: HQ and trusted contacts at once with reminders, partners when nobody acknowledged within
#: 10 minutes, the public once verified.
STAGED_POLICY = """
[[stages]]
name = "first"
roles = ["hq", "trusted"]
reminder_interval_s = 300

[[stages]]
name = "partners"
roles = ["partner"]
condition = "unacknowledged"
delay_s = 600

[[stages]]
name = "public"
roles = ["public"]
condition = "verified"
"""


@dataclass
class Scene:
    broker: RunningBroker
    database_url: str
    smtp: SMTPReceiver
    http: HTTPReceiver
    tmp_path: Path
    clock: FakeClock = field(default_factory=FakeClock)
    hub: RunningHub | None = None
    device: RawDevice | None = None
    defender_id: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        self.store: Store = open_store(self.database_url)
        self.registry = NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))
        self.config = hub_config(self.broker, self.database_url)
        self.config.http.enabled = True
        self.config.http.port = _free_port()
        self.config.http.public_url = f"http://127.0.0.1:{self.config.http.port}"
        self.actions = AlarmActions(self.store.engine, lifecycle_for(self.config), self.clock)
        defender = admin.add_defender(self.store.engine, "Natalia Test", timezone="Europe/Moscow")
        assert defender.id is not None
        self.defender_id = defender.id
        creds = admin.add_device(
            self.store.engine, "wb-1", defender.id, self.broker.process.settings.data_dir
        )
        self.broker.add_account("wb-1", creds.password)
        self.device_password = creds.password
        self.device_key = creds.key

    @classmethod
    def with_hq(
        cls,
        broker: RunningBroker,
        smtp: SMTPReceiver,
        http: HTTPReceiver,
        tmp_path: Path,
        policy: str,
    ) -> Scene:
        """A scene on SQLite with ``policy`` as the default and HQ (hq@example.org) as a
        contact; the hub is not started yet."""
        scene = cls(broker, f"sqlite:///{tmp_path / 'natalia.db'}", smtp, http, tmp_path)
        scene.policy(policy)
        scene.contact("HQ", "hq@example.org", role=Role.HQ)
        return scene

    # -- set-up -------------------------------------------------------------------------------

    def policy(self, toml: str, name: str = "default") -> None:
        path = self.tmp_path / f"{name}.toml"
        path.write_text(toml)
        admin.set_policy(self.store.engine, name, path)

    def contact(
        self,
        name: str,
        email: str | None = None,
        *,
        role: Role = Role.TRUSTED,
        url: str | None = None,
        org: bool = False,
        **options: Any,
    ) -> int:
        channel = url or self.smtp.url(email or f"{name.lower()}@example.org")
        defender_id = None if org or role is Role.HQ else self.defender_id
        contact = admin.add_contact(
            self.store.engine, self.registry, name, channel, defender_id, role=role, **options
        )
        assert contact.id is not None
        return contact.id

    def defender(self, **options: Any) -> None:
        admin.set_defender_options(self.store.engine, self.defender_id, **options)

    # -- running ------------------------------------------------------------------------------

    def start(self, device: bool = True) -> Scene:
        """Start the hub and (unless ``device`` is False) a raw client logged in as wb-1."""
        self.hub = RunningHub(self.config, clock=self.clock).start()
        if device and self.device is None:
            self.device = RawDevice(
                self.broker.host, self.broker.port, "wb-1", self.device_password, self.device_key
            )
        return self

    def stop_hub(self) -> None:
        if self.hub is not None:
            self.hub.stop()
            self.hub = None

    def close(self) -> None:
        self.stop_hub()
        if self.device is not None:
            self.device.close()

    def alarm(self, alarm_id: str = "al-1", kind: AlarmKind = AlarmKind.PANIC) -> Alarm:
        assert self.device is not None
        self.seq += 1
        self.device.publish("alarm", make_alarm(alarm_id, seq=self.seq, kind=kind).to_payload())
        found: Alarm = wait_until(lambda: self.store.find_alarm("wb-1", alarm_id))
        return found

    def cancel(self, alarm_id: str, code: str) -> None:
        """The defender enters ``code`` on the wristband to cancel ``alarm_id``."""
        from devicekit.protocol import Cancel, utcnow

        self.seq += 1
        cancel = Cancel(alarm_id=alarm_id, ts=utcnow(), seq=self.seq, code=code)
        self.publish("cancel", cancel.to_payload())

    def stages(self, alarm_id: str) -> list[str]:
        """Ack stages the wristband received for ``alarm_id``."""
        assert self.device is not None
        return self.device.stages(alarm_id)

    def publish(self, channel: str, payload: bytes) -> None:
        assert self.device is not None
        self.device.publish(channel, payload)

    def advance(self, seconds: float) -> None:
        """Move the clock and let the hub run its timers and send what they queued."""
        self.clock.advance(seconds)
        assert self.hub is not None
        self.hub.next_rounds()
        self.settle()

    def settle(self) -> None:
        """Wait until nothing is pending, being sent or waiting for a retry."""
        final = ("sent", "failed", "dead", "cancelled")
        wait_until(lambda: all(d.status in final for d in self.store.deliveries()))

    # -- looking ------------------------------------------------------------------------------

    def mails_to(self, address: str) -> list[str]:
        return [m.message["Subject"] for m in self.smtp.messages if address in m.rcpt_tos]

    def mails_about(self, address: str, alarm: Alarm) -> list[str]:
        """Subjects of the mails to ``address`` that name ``alarm`` (its reference)."""
        return [
            str(m.message["Subject"])
            for m in self.smtp.messages
            if address in m.rcpt_tos and _names(m.text, alarm)
        ]

    def ack_links(self, address: str, alarm: Alarm | None = None) -> list[str]:
        """The acknowledgement links mailed to ``address`` (about ``alarm``), oldest first."""
        links = []
        for mail in self.smtp.messages:
            if address not in mail.rcpt_tos:
                continue
            if alarm is not None and not _names(mail.text, alarm):
                continue
            links += [
                line[line.index("http") :].strip()
                for line in mail.text.splitlines()
                if "/ack/" in line
            ]
        return links

    def deliveries(self, alarm: Alarm, recipient: str | None = None) -> list[Delivery]:
        rows = self.store.deliveries(alarm.id)
        return [d for d in rows if recipient is None or d.recipient == recipient]

    def events(self, alarm: Alarm) -> list[str]:
        assert alarm.id is not None
        return [e.kind for e in self.store.events(alarm.id)]

    def fresh(self, alarm: Alarm) -> Alarm:
        assert alarm.id is not None
        found = self.store.get_alarm(alarm.id)
        assert found is not None
        return found


def _names(text: str, alarm: Alarm) -> bool:
    """Whether a message's text is about ``alarm`` (its "Reference: A12" line)."""
    return f"Reference: A{alarm.id}" in (line.strip() for line in text.splitlines())


def _free_port() -> int:
    from broker.launcher import free_port

    return free_port()
