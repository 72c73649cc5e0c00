"""The code the top-level README shows works as shown."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.hubs import RunningHub, hub_config, open_store, sqlite_url
from tests.support.population import populate_on_broker

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_device_maker_example_raises_an_alarm_the_hub_stores(broker, tmp_path: Path) -> None:
    [block] = python_blocks(README.read_text())
    url = sqlite_url(tmp_path)
    store = open_store(url)
    people = populate_on_broker(
        store.engine, broker, contacts={"HQ console": "console://"}, device_id="wb-0001"
    )
    code = block.replace('"broker.example.org"', repr(broker.host))
    code = code.replace("port=1883", f"port={broker.port}")
    code = code.replace('"/var/lib/wristband"', repr(str(tmp_path / "wristband")))
    assert code.count(str(broker.port)) == 1 and str(tmp_path) in code
    given = {"password": people.device_password, "key": people.device_key}
    with RunningHub(hub_config(broker, url)):
        exec(code, {**given, "lat": 43.3178, "lon": 45.6982})  # noqa: S102
    [alarm] = store.alarms()
    assert (alarm.device_id, alarm.kind, alarm.lat) == ("wb-0001", "panic", 43.3178)
