"""What can go wrong with a Defenders' Days request; the API maps each to a problem status."""

from __future__ import annotations


class ConferenceError(ValueError):
    """A request that cannot be carried out as asked (422): bad dates, an unknown defender..."""


class ConferenceConflict(RuntimeError):
    """A request that clashes with the current state (409): already registered, training off..."""


class ConferenceNotFound(LookupError):
    """Something the request names does not exist, or not in this event (404)."""
