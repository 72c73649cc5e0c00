"""When the database cannot store an alarm, the hub does not acknowledge it, the broker keeps it,
and the alarm is processed once the database works again. Nothing about it reaches the log
but its topic and the kind of error.

"Cannot store" means the database takes neither the alarm nor its refusal: a database that
takes a refusal is working, and a message that fails there is refused and acknowledged instead
(tests/test_ingest_failures.py)."""

from __future__ import annotations

import logging

from sqlalchemy import text

from tests.support.device import make_alarm
from tests.support.hubs import RunningHub, hub_config, open_store
from tests.support.population import populate_on_broker
from tests.support.receivers import wait_until


def test_alarm_not_stored_is_not_acked_and_is_processed_after_recovery(
    broker, database_url, smtp_server, caplog
) -> None:
    store = open_store(database_url)
    people = populate_on_broker(
        store.engine, broker, contacts={"Sister": smtp_server.url("sister@example.org")}
    )
    device = people.raw_device(broker)
    config = hub_config(broker, database_url)
    config.broker.redelivery_delay_s = 0.5
    caplog.set_level(logging.INFO)
    try:
        with RunningHub(config):
            with store.engine.begin() as conn:  # nothing can be stored any more
                conn.execute(text("ALTER TABLE alarm RENAME TO alarm_away"))
                conn.execute(text("ALTER TABLE rejectedmessage RENAME TO rejected_away"))
            device.publish("alarm", make_alarm("during-outage").to_payload())
            wait_until(lambda: "database error" in caplog.text)
            assert device.stages("during-outage") == []  # no ack for what was not stored
            with store.engine.begin() as conn:
                conn.execute(text("ALTER TABLE alarm_away RENAME TO alarm"))
                conn.execute(text("ALTER TABLE rejected_away RENAME TO rejectedmessage"))
            wait_until(lambda: "received" in device.stages("during-outage"), timeout=20)
            stored = store.find_alarm("wb-1", "during-outage")
            assert stored is not None and stored.id is not None
            wait_until(lambda: all(d.status == "sent" for d in store.deliveries(stored.id)))
    finally:
        device.close()
    assert len(smtp_server.messages) == 1
    assert "43.3178" not in caplog.text and "45.6982" not in caplog.text
