"""``natalia device provision``: the bundle file and QR code, and a wristband built from them that
raises an alarm over TLS to a real Mosquitto, acked by a real hub that itself connects over TLS."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import ssl
import struct
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import pytest
import segno
import zxingcpp
from sqlmodel import Session

from broker import PasswordFile
from broker.pki import Pki
from devicekit import AckStage, AlarmKind
from devicekit.bundle import (
    QR_MAX_BYTES,
    BundleError,
    ProvisioningBundle,
    certificate_fingerprints,
    load_bundle,
)
from devicekit.protocol import PROTOCOL_VERSION
from devicekit.wristband import Wristband
from hub.config import ConfigError, config_from_mapping
from hub.db import make_engine
from hub.models import Device
from hub.mqtt import HubConnection
from tests.support.hubs import RunningHub, open_store
from tests.support.sites import TlsSite, make_tls_site, natalia

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> TlsSite:
    return make_tls_site(tmp_path / "site", capsys)


def provision(
    site: TlsSite, capsys: pytest.CaptureFixture[str], device_id: str, *options: str
) -> tuple[ProvisioningBundle, Path, str]:
    out = site.directory / "bundles"
    code, printed, err = natalia(
        capsys, "device", "provision", device_id, "--out", str(out), *options, *site.c
    )
    assert code == 0, err
    path = out / f"{device_id}.bundle.json"
    return load_bundle(path), path, printed


def device_row(site: TlsSite, device_id: str) -> Device:
    with Session(make_engine(site.config.database.url)) as session:
        device = session.get(Device, device_id)
    assert device is not None
    return device


# -- reading a QR code back from the PNG file --------------------------------------------------


class _Gray:
    """An 8-bit grayscale image zxing-cpp reads through the array interface."""

    def __init__(self, pixels: bytes, width: int, height: int) -> None:
        self.__array_interface__ = {
            "shape": (height, width),
            "typestr": "|u1",
            "data": pixels,
            "version": 3,
        }


def png_pixels(data: bytes) -> _Gray:
    """Decode the 1-bit grayscale PNG segno writes (filters None and Up only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert (depth, color) == (1, 0), "segno writes 1-bit grayscale"
    raw, stride = zlib.decompress(idat), (width + 7) // 8
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        assert kind in (0, 2), f"PNG filter {kind}"
        if kind == 2:
            line = bytes((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        previous = line
        rows.append(bytes(255 if line[x // 8] >> (7 - x % 8) & 1 else 0 for x in range(width)))
    return _Gray(b"".join(rows), width, height)


def scan(png: bytes) -> bytes:
    # A pure image (one code, no perspective): zxing's general detector sometimes misses a
    # dense version-40 code at scale 4, or finds a second one in its data (about 1 in 130).
    [found] = zxingcpp.read_barcodes(png_pixels(png), is_pure=True)
    assert found.format == zxingcpp.BarcodeFormat.QRCode
    return bytes(found.bytes)


def ports_used_by(log: str, username: str) -> set[int]:
    """The listener ports the broker's log shows ``username`` connecting on."""
    port_of = {
        m[1]: int(m[2]) for m in re.finditer(r"New connection from (\S+) on port (\d+)\.", log)
    }
    found = re.finditer(rf"New client connected from (\S+) as {re.escape(username)} ", log)
    return {port_of[m[1]] for m in found}


# -- the bundle --------------------------------------------------------------------------------


def test_provision_writes_a_private_bundle_and_a_qr_code_of_it(
    site: TlsSite, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, path, printed = provision(site, capsys, "wb-1", "--defender", "1", "--qr", "both")
    for kind in ("json", "png", "svg"):
        written = path.with_name(f"wb-1.bundle.{kind}")
        assert written.stat().st_mode & 0o777 == 0o600, written
    device = device_row(site, "wb-1")
    assert bundle.key == device.key and device.active
    assert (bundle.username, bundle.host, bundle.port) == ("wb-1", "localhost", site.tls_port)
    assert bundle.topic_prefix == "natalia/v1/devices/wb-1"
    assert bundle.protocol == PROTOCOL_VERSION and not bundle.cert and not bundle.encrypt
    assert bundle.ca_cert == site.pki.ca_cert.read_text()
    assert bundle.ca_sha256 == certificate_fingerprints(bundle.ca_cert)
    assert PasswordFile(site.data_dir / "passwd").check("wb-1", bundle.password)
    assert bundle.password not in printed and bundle.key not in printed
    assert "the QR code holds the whole bundle" in printed

    png = path.with_name("wb-1.bundle.png").read_bytes()
    assert load_bundle(scan(png)) == bundle  # the QR code is the whole bundle
    svg = path.with_name("wb-1.bundle.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg

    code, _, err = natalia(capsys, "device", "provision", "wb-1", "--defender", "1", *site.c)
    assert code == 2 and "already registered" in err
    code, _, err = natalia(
        capsys, "device", "provision", "wb-1", "--rekey", "--out", str(path.parent), *site.c
    )
    assert code == 2 and "exists" in err  # never overwrites a bundle not yet flashed

    _, _, printed = provision(
        site, capsys, "wb-3", "--defender", "1", "--qr", "none", "--qr-terminal"
    )
    assert sorted(p.name for p in path.parent.glob("wb-3.*")) == ["wb-3.bundle.json"]
    assert printed.count("\u2588" * 20) > 10  # the QR code, in block characters


def test_a_bundle_with_a_client_certificate_still_fits_one_qr_code(
    site: TlsSite, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, path, printed = provision(
        site, capsys, "wb-2", "--defender", "1", "--cert", "--encrypt"
    )
    assert bundle.cert and bundle.encrypt and bundle.port == site.cert_port
    assert bundle.client_cert == site.pki.device_cert("wb-2").read_text()
    assert bundle.client_key == site.pki.device_key("wb-2").read_text()
    assert device_row(site, "wb-2").encrypt
    assert len(bundle.qr_payload()) <= QR_MAX_BYTES
    assert load_bundle(scan(path.with_name("wb-2.bundle.png").read_bytes())) == bundle
    assert "BEGIN" not in printed


def new_ca(directory: Path, name: str = "Other CA") -> Pki:
    """A CA of its own (EC, as ``natalia broker ca init`` makes them)."""
    pki = Pki(directory)
    pki.init_ca(name)
    return pki


def test_a_bundle_too_big_for_one_qr_code_keeps_the_ca_fingerprint(tmp_path: Path) -> None:
    # Trusting several CAs (a rollover, plus CAs of the operator's own) with a client
    # certificate is more than one QR code holds.
    cas = [new_ca(tmp_path / f"ca{n}", f"Natalia broker CA {n}") for n in range(4)]
    client = cas[0].issue_device("wb-9")
    all_cas = "".join(ca.ca_cert.read_text() for ca in cas)
    bundle = ProvisioningBundle(
        device_id="wb-9",
        username="wb-9",
        password="secret-password",
        key="ab" * 32,
        encrypt=False,
        host="mqtt.example.org",
        port=8884,
        cert=True,
        ca_sha256=certificate_fingerprints(all_cas),
        ca_cert=all_cas,
        client_cert=client.read_text(),
        client_key=cas[0].device_key("wb-9").read_text(),
        topic_prefix="natalia/v1/devices/wb-9",
    )
    assert len(bundle.model_dump_json(exclude_none=True)) > QR_MAX_BYTES
    payload = bundle.qr_payload()
    qr = segno.make(payload, error="l", micro=False)
    image = io.BytesIO()
    qr.save(image, kind="png", scale=4, border=4)
    partial = load_bundle(scan(image.getvalue()))
    assert partial.ca_cert is None and partial.client_cert is None and partial.client_key is None
    assert not partial.complete and bundle.complete
    assert partial.ca_sha256 == bundle.ca_sha256 and len(partial.ca_sha256) == 4
    assert partial.model_copy(update={"ca_cert": None, "client_cert": None}) == partial
    assert (partial.password, partial.key, partial.port) == (bundle.password, bundle.key, 8884)
    with pytest.raises(ValueError, match="no CA certificate"):
        partial.tls_context()


def test_a_bundle_refuses_what_does_not_fit_together(tmp_path: Path) -> None:
    fields = {
        "device_id": "wb-1",
        "username": "wb-1",
        "password": "pw-secret-1",
        "key": "cd" * 32,
        "encrypt": False,
        "host": "localhost",
        "port": 8883,
        "cert": False,
        "ca_sha256": ["00" * 32],
        "topic_prefix": "natalia/v1/devices/wb-1",
    }
    ProvisioningBundle.model_validate(fields)
    for change, problem in (
        ({"username": "wb-2"}, "username"),
        ({"topic_prefix": "natalia/v1/devices/wb-2"}, "topic_prefix"),
        ({"key": "CD" * 32}, "key"),
        ({"client_cert": "x"}, "together"),
        ({"ca_cert": new_ca(tmp_path).ca_cert.read_text()}, "ca_sha256"),
        ({"ca_sha256": []}, "ca_sha256"),
    ):
        with pytest.raises(BundleError, match=problem) as raised:
            load_bundle(json.dumps(fields | change))
        assert "pw-secret-1" not in str(raised.value)  # never quotes the secrets


# -- the alarm path over TLS --------------------------------------------------------------------


def test_wristband_from_bundle_raises_an_alarm_over_tls_that_the_hub_acks(
    site: TlsSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plain, _, _ = provision(site, capsys, "wb-1", "--defender", "1")
    cert, cert_path, _ = provision(site, capsys, "wb-2", "--defender", "1", "--cert")
    _, sim_path, _ = provision(site, capsys, "wb-3", "--defender", "1")
    site.hub_uses_tls()
    broker = site.start_broker()
    try:
        config = site.config
        assert config.broker.connect_port == site.tls_port
        with RunningHub(config) as hub:
            assert hub.hub is not None and hub.hub.connection.tls is not None
            for bundle, source in ((plain, plain), (cert, cert_path)):
                band = Wristband.from_bundle(source, state_dir=tmp_path / bundle.device_id)
                with band:
                    band.wait_connected(10)
                    alarm = band.trigger(AlarmKind.PANIC, battery=50)
                    ack = band.wait_for_ack(alarm.alarm_id, AckStage.RECEIVED, timeout=20)
                assert ack.alarm_id == alarm.alarm_id
                assert (band.host, band.port) == ("localhost", bundle.port)

            env = {k: v for k, v in os.environ.items() if not k.startswith("NATALIA_")}
            result = subprocess.run(
                [
                    *(sys.executable, "-m", "devicekit", "simulate", "--bundle", str(sim_path)),
                    *("--state-dir", str(tmp_path / "sim"), "--wait", "30"),
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                timeout=60,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert "all acked" in result.stdout
            assert sim_path.read_text().count("password") == 1
            assert json.loads(sim_path.read_text())["password"] not in result.stdout
        log = (site.data_dir / "mosquitto.log").read_text()
        assert ports_used_by(log, "natalia-hub") == {site.tls_port}
        assert ports_used_by(log, "wb-1") == {site.tls_port}
        assert ports_used_by(log, "wb-2") == {site.cert_port}
    finally:
        broker.stop()


def test_the_hub_refuses_a_broker_its_ca_did_not_sign(
    site: TlsSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rogue = new_ca(tmp_path / "rogue").ca_cert
    site.hub_uses_tls()
    site.config_path.write_text(
        site.config_path.read_text().replace("tls = true\n", f'tls = true\nca_file = "{rogue}"\n')
    )
    config = site.config
    assert config.broker.trusted_ca_file == rogue
    broker = site.start_broker()
    try:

        async def connect() -> None:
            connection = HubConnection(config.broker, handler=lambda t, p: asyncio.sleep(0, 0))
            await connection.client.connect(
                config.broker.host, config.broker.connect_port, ssl=connection.tls
            )

        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(connect())
    finally:
        broker.stop()


def test_hub_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_port"):
        config_from_mapping({"broker": {"tls": True}}, tmp_path)
    config = config_from_mapping(
        {"broker": {"tls": True, "tls_port": 8883, "ca_file": "ca.pem", "data_dir": "b"}},
        tmp_path,
    )
    assert config.broker.connect_port == 8883 and config.broker.port == 1883
    assert config.broker.trusted_ca_file == (tmp_path / "ca.pem").resolve()
    plain = config_from_mapping({"broker": {"tls_port": 8883}}, tmp_path)
    assert plain.broker.connect_port == 1883 and plain.broker.trusted_ca_file is None


def test_devicekit_readme_bundle_example_runs_as_shown(
    site: TlsSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    readme = (REPO / "devicekit" / "README.md").read_text()
    [block] = re.findall(r"^```py\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    _, path, _ = provision(site, capsys, "wb-0001", "--defender", "1")
    code = block.replace('"wb-0001.bundle.json"', repr(str(path)))
    code = code.replace('"/var/lib/wristband"', repr(str(tmp_path / "state")))
    assert code.count(str(tmp_path)) == 2
    site.hub_uses_tls()
    broker = site.start_broker()
    try:
        with RunningHub(site.config):
            exec(compile(code, "devicekit/README.md", "exec"), {})  # noqa: S102 (our README)
        [alarm] = open_store(site.config.database.url).alarms()
        assert alarm.device_id == "wb-0001"
    finally:
        broker.stop()


def test_protocol_md_documents_every_bundle_field() -> None:
    text = (REPO / "devicekit" / "PROTOCOL.md").read_text()
    section = text.split(". Provisioning bundle\n")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (yes|no) \|", section, flags=re.M))
    assert rows.keys() == ProvisioningBundle.model_fields.keys()
    for name, required in rows.items():  # "no": may be absent (a partial QR code)
        assert (required == "no") == (ProvisioningBundle.model_fields[name].default is None), name


def test_broker_readme_hub_tls_example_is_a_valid_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    readme = (REPO / "broker" / "README.md").read_text()
    [block] = re.findall(r"^```toml\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    config = config_from_mapping(tomllib.loads(block), tmp_path)
    assert config.broker.tls and config.broker.connect_port == 8883
    assert config.broker.trusted_ca_file == tmp_path / "ca.crt"
    (tmp_path / "ca.crt").write_bytes(new_ca(tmp_path / "example").ca_cert.read_bytes())
    assert HubConnection(config.broker, handler=None).tls is not None  # type: ignore[arg-type]
    plain = config_from_mapping({"broker": {"host": "mqtt.example.org"}}, tmp_path)
    with caplog.at_level(logging.WARNING, logger="hub.mqtt"):
        assert HubConnection(plain.broker, handler=None).tls is None  # type: ignore[arg-type]
    assert "without TLS" in caplog.text
