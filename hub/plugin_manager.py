"""Load notifier plugins (built-ins, then entry points) and pick one per channel URL scheme."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import pluggy

from hub import hookspecs
from hub.plugin_api import (
    PROJECT,
    InvalidChannelURL,
    Notifier,
    PluginError,
    register_masker,
    url_scheme,
)

ENTRY_POINT_GROUP = "natalia.plugins"
#: Built-in plugins are ordinary plugins, loaded first.
DEFAULT_PLUGINS = ("plugins.console", "plugins.apprise_notifier", "plugins.facebook")


def get_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, the built-ins and (unless off) installed plugins."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


class NotifierRegistry:
    """Which notifier sends to which URL scheme. Explicit schemes win over a catch-all notifier.

    A notifier whose ``schemes`` is very large (Apprise knows 100+) is still just a set of
    schemes; a scheme claimed twice is a configuration error.
    """

    def __init__(self, notifiers: Iterable[Notifier]) -> None:
        self._by_scheme: dict[str, Notifier] = {}
        self.notifiers: list[Notifier] = []
        for notifier in notifiers:
            if not isinstance(notifier, Notifier):
                raise PluginError(f"{notifier!r} is not a Notifier (needs name, schemes, send)")
            self.notifiers.append(notifier)
            for scheme in notifier.schemes:
                other = self._by_scheme.get(scheme.lower())
                if other is not None and other is not notifier:
                    raise PluginError(
                        f"both {other.name!r} and {notifier.name!r} claim the {scheme}:// scheme; "
                        "uninstall or disable one of them"
                    )
                self._by_scheme[scheme.lower()] = notifier
                masker = getattr(notifier, "mask", None)
                if callable(masker):
                    register_masker(scheme, masker)

    @classmethod
    def from_plugins(
        cls, pm: pluggy.PluginManager, settings: Mapping[str, Any] | None = None
    ) -> NotifierRegistry:
        provided = pm.hook.natalia_notifiers(settings=settings or {})
        return cls(notifier for group in provided for notifier in group)

    @property
    def schemes(self) -> Collection[str]:
        return self._by_scheme.keys()

    def for_url(self, url: str) -> Notifier:
        """The notifier for ``url``; :class:`InvalidChannelURL` if no plugin handles its scheme."""
        scheme = url_scheme(url)
        try:
            return self._by_scheme[scheme]
        except KeyError:
            raise InvalidChannelURL(
                f"no notifier plugin handles {scheme}:// URLs; installed notifiers: "
                + ", ".join(sorted(n.name for n in self.notifiers))
            ) from None

    def validate(self, url: str) -> None:
        """Check a channel URL before it is stored (raises :class:`InvalidChannelURL`)."""
        self.for_url(url).validate(url)
