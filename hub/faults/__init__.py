"""Fault injection: show, on this machine, that alarms survive the faults a deployment meets.

An alarm-receiving centre is trusted because it can *show* that alarms survive faults. Each
scenario starts a deployment on loopback in a directory of its own (Mosquitto with the shipped
config, ``natalia hub run`` as a child process, a local webhook receiver standing in for every
recipient), raises alarms the way wristbands do (stored on the device, re-sent with the same id
until the hub's ack), injects one kind of fault and counts what came out at the other end:

==========  ================================================================================
sent        distinct alarm ids the wristbands raised
stored      distinct alarms in the hub's database (its unique key forbids a second row)
notified    alarms every recipient received: the receiver answered 2xx *and* the hub
            recorded a ``sent`` delivery
duplicated  extra copies of an alarm a recipient had already received
lost        sent - stored, plus stored alarms that some recipient never received
==========  ================================================================================

The scenarios and what each one proves:

``hub-kill``
    A stream of alarms from several wristbands while the hub is killed with SIGKILL at random
    moments and restarted, N times; then one more alarm per wristband and M kills, each the
    moment the restarted hub is sending, so the same deliveries are cut off again and again (a
    hub in a restart loop). Proves: the commit-before-PUBACK rule plus the broker's redelivery
    and the devices' re-sends lose nothing, and a delivery cut off by a crash is sent again
    after the restart (at-least-once) however often that happens — an interruption is not a
    failure of the channel and uses up none of its attempts — with duplicates only where the
    bound below allows them.
``broker-kill``
    The hub is away; wristbands raise alarms that Mosquitto queues for the hub's persistent
    session; Mosquitto is killed with SIGKILL right after a persistence snapshot, so it loses
    what arrived since; it is restarted, the hub drains what the broker kept, then the
    wristbands come back and re-send what was never acknowledged. Proves: a broker crash costs
    at most the snapshot window, and the devices' store-and-forward covers that window.
``db-down``
    A fresh PostgreSQL database stops accepting connections (``ALLOW_CONNECTIONS false`` and
    its sessions terminated; the server itself keeps running) while alarms arrive, then accepts
    them again; right then each wristband raises one more alarm, which overtakes its older
    pending ones. Proves: the hub acknowledges nothing it could not store (the wristbands keep
    the alarms pending), and stores everything once the database is back, whatever order the
    broker and the wristbands re-send it in (the anti-replay window, PROTOCOL.md 5.3).
``storm``
    1,000 devices raise an alarm each within seconds while the only channel answers 503; then it
    recovers. Proves: ingest keeps up, every alarm is stored and acknowledged, and the
    dispatcher's retries deliver every alarm once the channel works again.

**The duplicate bound.** The hub delivers at least once. A send begins by *claiming* its
delivery row (``sending``, ``attempts`` + 1) and ends by recording the result; a claim a crash
leaves open is taken back when its lease expires and the message is sent again. So a recipient
gets a message twice only where a fault cut a claim off between the send and the record: at
most one extra copy per claim caught open. Each scenario reads the open claims, as (row,
attempt), from the database at every fault (while the killed hub is down; just before an
outage) and checks, per row, *extra copies <= its claims caught open* (``unexplained_duplicates``
counts the excess: it must be 0) and, in total, *duplicated <= claims caught open*
(``duplicate_bound``) *<= faults x the most claims open at one fault*. That last factor is not a
constant: the dispatcher claims up to 100 rows per round and may start a round before the last
one finished, so open claims are bounded only by the deliveries not yet finished (recipients x
alarms whose first round is open). A crash during a burst, or with slow recipients, costs more
duplicates than a crash at rest. A fault that does not kill the hub should cost none.

Used by ``scripts/chaos.py`` (operators: the table) and ``tests/test_faults.py`` (small sizes).
This is operator tooling that starts processes and opens ports on loopback only; point it at a
PostgreSQL server only with a role that may create and drop its own scratch database.
"""

from hub.faults.postgres import database_outage, scratch_database
from hub.faults.scenarios import (
    SCENARIOS,
    deployment,
    run_broker_kill,
    run_db_down,
    run_hub_kill,
    run_storm,
)
from hub.faults.site import AlarmReceiver, FaultResult, Site

__all__ = [
    "SCENARIOS",
    "AlarmReceiver",
    "FaultResult",
    "Site",
    "database_outage",
    "deployment",
    "run_broker_kill",
    "run_db_down",
    "run_hub_kill",
    "run_storm",
    "scratch_database",
]
