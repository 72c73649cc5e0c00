"""Natalia's built-in notifier plugins, loaded by ``hub.plugin_manager`` before any installed one.

- :mod:`plugins.console` — ``console://``: prints each notification, for the demo and for tests.
- :mod:`plugins.apprise_notifier` — every Apprise URL: e-mail, SMS gateways, Telegram, X,
  Signal, Matrix, ntfy and 100+ more.
- :mod:`plugins.facebook` — ``facebook://``: posts to a Facebook Page (Apprise has no Facebook).

They are ordinary plugins written against :mod:`hub.plugin_api`, exactly as a partner's plugin
would be; ``plugins/README.md`` is the guide and :mod:`plugins.testing` the test harness.
"""
