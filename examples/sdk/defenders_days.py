"""The Defenders' Days integration: an event, its programme, participants, an announcement and a
training round with test alarms — with the async client.

Against the demo hub (``natalia demo --serve`` prints how to load its tokens)::

    set -a; . /tmp/natalia-demo-XXXX/api.env; set +a
    .venv/bin/python examples/sdk/defenders_days.py

``NATALIA_TOKEN`` is the conference system's token (role ``integration``): it runs the event and
registers guests by name. ``NATALIA_HQ_TOKEN`` is an HQ operator's (role ``hq``): only HQ links a
registration to a defender and hands out training wristbands, which are device credentials.
Announcements and the training alarm go to ``console://`` here, so they appear in the demo's
terminal; real registrations carry an e-mail or messenger URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, date, datetime

from sdk import AsyncClient


async def main(defender_id: int) -> None:
    url, hq_token = os.environ["NATALIA_URL"], os.environ["NATALIA_HQ_TOKEN"]
    async with AsyncClient.from_env() as client, AsyncClient(url, hq_token) as hq:
        event = await client.events.create(
            name="Defenders' Days 2027",
            starts_on=date(2027, 5, 18),
            ends_on=date(2027, 5, 20),
            location="Stockholm",
        )
        await client.events.add_session(
            event.id,
            title="Your alarm wristband: a hands-on drill",
            kind="training",
            starts_at=datetime(2027, 5, 18, 9, 0, tzinfo=UTC),
            ends_at=datetime(2027, 5, 18, 10, 30, tzinfo=UTC),
            room="Room 2",
        )
        guest = await client.events.register(
            event.id,
            kind="guest",
            name="Invited journalist",
            channel_url="console://",
            needs={"security_considerations": "no photos, no name in public lists"},
        )
        interpreter = await client.events.register(
            event.id, kind="guest", name="Interpreter", channel_url="console://"
        )
        defender = await hq.events.register(  # HQ links the defender's registration
            event.id,
            kind="defender",
            defender_id=defender_id,
            channel_url="console://",
            needs={"visa_letter": True, "travel_support": True},
        )
        print(
            f"event {event.id}: {event.name}, guests {guest.id} and {interpreter.id}, "
            f"defender {defender.id}"
        )

        announcement = await client.events.announce(
            event.id,
            title="Welcome to Defenders' Days",
            body="Doors open at 8:30. Bring the wristband you will get at the drill.",
        )
        print(f"announcement {announcement.id} queued for {announcement.recipients} participants")

        training = await hq.events.start_training(event.id)
        for kit in training.kits:
            print(f"training wristband {kit.device_id} for registration {kit.registration_id}")
        alarm = await hq.events.training_alarm(event.id, registration_id=defender.id)
        print(f"training alarm {alarm.ref}: kind {alarm.kind}, state {alarm.state.value}")
        ended = await hq.events.end_training(event.id)
        print(f"training over: active={ended.active}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defender", type=int, default=1, help="the demo's defender is 1")
    asyncio.run(main(parser.parse_args().defender))
