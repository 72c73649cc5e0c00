"""Outgoing webhooks: events of the hub (alarm events now; more sources can be added) POSTed,
signed and retried, to the URLs partner systems subscribed through ``/v1/webhooks``.

``sources`` (where events come from) -> ``fanout`` (one delivery row per subscription and
event) -> ``outbox`` (claims, results, retries) -> ``sender`` (the loop inside the hub, HTTP).
``signing`` documents the request byte for byte; so does hub/api/README.md ("Webhooks").
"""
