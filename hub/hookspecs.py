"""Every hook a Natalia plugin can implement. Each docstring is the hook's reference text.

``plugins/README.md`` repeats each signature; a test fails when the two disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from hub.plugin_api import PROJECT, Notifier

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def natalia_notifiers(settings: Mapping[str, Any]) -> Iterable[Notifier]:
    """Return the notifiers this plugin provides.

    ``settings`` is the ``[plugins]`` table of the hub's config file (each plugin reads its own
    sub-table, e.g. ``settings.get("facebook", {})``). Called once at start-up. Two notifiers
    claiming the same URL scheme stop the hub with an error naming both.
    """
    raise NotImplementedError  # a hookspec has no body of its own
