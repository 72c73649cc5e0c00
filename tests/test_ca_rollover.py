"""``natalia broker ca rollover`` / ``retire`` on a real Mosquitto: no device is cut off while the
CA changes, as long as the steps of broker/README.md ("CA rollover") are followed in order."""

from __future__ import annotations

import shutil
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from broker import BrokerProcess, PasswordFile
from tests.support.receivers import wait_until
from tests.support.sites import TlsSite, make_tls_site, natalia


def logs_in(
    port: int, username: str, password: str, cafile: Path, cert: Path | None = None
) -> bool:
    """One MQTT 5 login over TLS, verifying the broker with ``cafile``; True if accepted."""
    accepted: list[bool] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.tls_set(
        ca_certs=str(cafile),
        certfile=str(cert) if cert else None,
        keyfile=str(cert.with_suffix(".key")) if cert else None,
    )

    def on_connect(c: mqtt.Client, u: object, f: object, reason: object, p: object) -> None:
        accepted.append(getattr(reason, "value", 1) == 0)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: done.set()
    try:
        client.connect("localhost", port)
    except (ssl.SSLError, OSError):
        return False
    client.loop_start()
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return accepted == [True]


def keep(path: Path, where: Path) -> Path:
    """A copy of a device's certificate and key (or of a CA file) as flashed on a device."""
    where.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copy(path, where / path.name))
    if path.suffix == ".crt" and path.with_suffix(".key").exists():
        shutil.copy(path.with_suffix(".key"), where / path.with_suffix(".key").name)
    return copy


def restart(broker: BrokerProcess, site: TlsSite) -> BrokerProcess:
    """Mosquitto reads ``cafile`` only at start."""
    broker.stop()
    return site.start_broker()


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> TlsSite:
    return make_tls_site(tmp_path / "site", capsys)


def test_ca_rollover_keeps_every_device_connected(
    site: TlsSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    c = site.c
    for device in ("wb-old", "wb-new"):
        PasswordFile(site.data_dir / "passwd").set(device, "pw")
    pki = site.pki
    old_cert = keep(pki.issue_device("wb-old"), tmp_path / "wb-old")
    old_ca = keep(pki.ca_cert, tmp_path / "old-trust")  # what devices were flashed with
    broker = site.start_broker()
    try:
        assert logs_in(site.cert_port, "wb-old", "pw", old_ca, old_cert)

        # 1. Start: a new CA issues, both are trusted; the server certificate is unchanged.
        code, out, _ = natalia(capsys, "broker", "ca", "rollover", "--name", "CA 2", *c)
        assert code == 0 and "restart the broker" in out
        assert natalia(capsys, "broker", "ca", "rollover", *c)[0] == 2  # one at a time
        both = x509.load_pem_x509_certificates(pki.ca_cert.read_bytes())
        assert [ca.subject.rfc4514_string() for ca in both] == [
            "CN=CA 2",
            "CN=Natalia broker CA",
        ]
        assert pki.crl.read_text().count("BEGIN X509 CRL") == 2
        broker = restart(broker, site)
        new_cert = keep(pki.issue_device("wb-new"), tmp_path / "wb-new")
        assert x509.load_pem_x509_certificate(new_cert.read_bytes()).issuer == both[0].subject
        both_trust = keep(pki.ca_cert, tmp_path / "both-trust")  # what re-flashed devices get
        assert logs_in(site.cert_port, "wb-old", "pw", old_ca, old_cert)  # not yet re-flashed
        assert logs_in(site.cert_port, "wb-new", "pw", both_trust, new_cert)
        assert logs_in(site.tls_port, "wb-old", "pw", old_ca)
        # The retired CA's CRL is re-signed too: revoking an old certificate still works.
        pki.revoke_device("wb-old", "suspended")
        broker.reload()  # Mosquitto re-reads the CRL on SIGHUP, in its next loop round
        wait_until(lambda: not logs_in(site.cert_port, "wb-old", "pw", old_ca, old_cert), 5)
        assert pki.release_hold("wb-old") is not None
        broker.reload()
        wait_until(lambda: logs_in(site.cert_port, "wb-old", "pw", old_ca, old_cert), 5)

        # 2. Every device re-flashed: the server certificate now comes from the new CA.
        assert natalia(capsys, "broker", "cert", "server", "--host", "localhost", *c)[0] == 0
        broker = restart(broker, site)
        assert logs_in(site.tls_port, "wb-old", "pw", both_trust)
        assert not logs_in(site.tls_port, "wb-old", "pw", old_ca)  # why step 2 waits

        # 3. Retire: only the new CA is trusted; old client certificates stop working.
        assert natalia(capsys, "broker", "ca", "retire", *c)[0] == 0
        assert natalia(capsys, "broker", "ca", "retire", *c)[0] == 2
        assert len(x509.load_pem_x509_certificates(pki.ca_cert.read_bytes())) == 1
        assert not pki.retired_dir.exists()
        broker = restart(broker, site)
        assert logs_in(site.cert_port, "wb-new", "pw", both_trust, new_cert)
        assert not logs_in(site.cert_port, "wb-old", "pw", both_trust, old_cert)
    finally:
        broker.stop()
