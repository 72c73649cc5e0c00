"""Python SDK for the Natalia hub's HTTP API (alarms, defenders, devices, emergency fund,
Defenders' Days). The hub's HTTP API and this client are built in their own issue; until then
this package only reserves the name, and ``sdk/README.md`` says what is coming.
"""

__all__: list[str] = []
