"""The emergency fund: defenders' requests for support, their review and audit trail.

A request (``tables.FundRequest``) is tied to a defender and optionally to the alarm it follows.
HQ moves it through review (``service.TRANSITIONS``); every change is an audit event
(``tables.FundRequestEvent``) written in the same transaction, and queues messages to HQ and, for
submissions and decisions, to the defender's trusted contacts (``notify``). The hub's dispatcher
sends them like any other delivery.

Modules: ``tables`` (rows, money as integer hundredths), ``service`` (the rules and the state
machine), ``changes`` (what an edit changes), ``notify`` (who is told), ``errors``.
``service.fund_events_after`` feeds the audit trail to webhooks.
"""
