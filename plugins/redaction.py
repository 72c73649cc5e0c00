"""Keep channel secrets out of the texts HQ sees.

A delivery's ``detail`` is stored and shown in HQ's tables, so it must never carry a password or a
token, even when a provider's error message or a library's exception text quotes the URL it was
given. Notifiers pass every text through :func:`redact` with the fragments of their channel URL
that count as secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

#: Fragments shorter than this are not masked: replacing "en" or "1" would shred every message,
#: and a secret that short offers no protection anyway.
MIN_SECRET_LENGTH = 4

_SEPARATORS = re.compile(r"[/:@?&=#,;+\s]+")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def url_fragments(url: str) -> set[str]:
    """Every piece of ``url`` after its scheme (user, password, host, path parts, query values).

    Used when nothing better is known, e.g. for a URL a library refused to parse: then the whole
    URL is treated as secret.
    """
    rest = _SCHEME.sub("", url)
    fragments: set[str] = set()
    for text in (rest, unquote(rest)):
        fragments.update(part for part in _SEPARATORS.split(text) if part)
    if rest:
        fragments.update({rest, unquote(rest)})
    return {part for part in fragments if len(part) >= MIN_SECRET_LENGTH}


def secret_fragments(url: str, masked_url: str) -> set[str]:
    """The fragments of ``url`` that its privacy-masked form ``masked_url`` does not show.

    A service that knows which of its URL parts are secret (Apprise's ``url(privacy=True)``)
    thereby tells us what to hide, while host names and other useful context stay readable.
    """
    visible = url_fragments(masked_url)
    return {fragment for fragment in url_fragments(url) if fragment not in visible}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (longest first) replaced by ``***``."""
    maskable = {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH}
    for secret in sorted(maskable, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
