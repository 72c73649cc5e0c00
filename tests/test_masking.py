"""Channel URLs as the hub shows and logs them: per scheme, every secret and every identity
(token, password, topic, e-mail address, phone number, path) replaced, only a server host left."""

from __future__ import annotations

import pytest

from hub.plugin_api import mask_url
from hub.plugin_manager import NotifierRegistry, get_plugin_manager

#: (URL, what the hub shows, what must never show).
TABLE = [
    ("ntfy://alarm-topic-7f3a", "ntfy://***", ["alarm-topic-7f3a"]),
    ("ntfys://user:pw@ntfy.example.org/topic42", "ntfys://***@ntfy.example.org/***", ["topic42"]),
    (
        "pover://userkey1234567890abcdefghijklm@apptoken1234567890abcdefghijk",
        "pover://***",
        ["userkey", "apptoken", "u...m"],
    ),
    (
        "mailto://ana:hunter22@gmail.com?to=sister@example.org",
        "mailto://***@gmail.com/***",
        ["hunter22", "sister", "ana"],
    ),
    (
        "mailtos://smtp.example.org?user=bob&pass=pw&to=ana@example.org",
        "mailtos://smtp.example.org/***",
        ["bob", "ana@"],
    ),
    (
        "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654321",
        "tgram://***",
        ["123456789", "AAHdq", "987654321"],
    ),
    (
        "json://user:pw@hooks.example.org/path/secret-token?x=1",
        "json://***@hooks.example.org/***",
        ["secret-token", "user"],
    ),
    (
        "jsons://hooks.example.org/alerts/abcdefghijklmnop",
        "jsons://hooks.example.org/***",
        ["abcd"],
    ),
    (
        "twilio://ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:authtoken1234@+15551234567/+15557654321",
        "twilio://***",
        ["AC", "authtoken", "5551234567", "5557654321"],
    ),
    ("clicksend://user:pass@+15551234567", "clicksend://***", ["5551234567", "user"]),
    ("httpsms://apikey123456@+15551234567/+15557654321", "httpsms://***", ["apikey", "555"]),
    (
        "signal://signal.example.org:8080/+15551234567/+15557654321",
        "signal://signal.example.org:8080/***",
        ["555"],
    ),
    ("facebook://PAGETOKEN123456@1234567", "facebook://***@1234567", ["PAGETOKEN"]),
    ("unknown://token-as-host/abc", "unknown://***", ["token-as-host"]),
]


@pytest.fixture(scope="module", autouse=True)
def registry() -> NotifierRegistry:
    """The built-in notifiers register how their schemes are masked."""
    return NotifierRegistry.from_plugins(get_plugin_manager(load_entry_points=False))


@pytest.mark.parametrize(("url", "shown", "hidden"), TABLE)
def test_each_scheme_shows_only_its_server(url: str, shown: str, hidden: list[str]) -> None:
    masked = mask_url(url)
    assert masked == shown
    for fragment in hidden:
        assert fragment not in masked
