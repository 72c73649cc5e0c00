"""``natalia device resume``, ``hub.admin.resume_device``, ``POST /v1/devices/{id}/resume`` and
``client.devices.resume``: a suspended wristband comes back with a new password; a revoked one
cannot (it is re-provisioned with ``--rekey``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from sqlmodel import Session

from broker import PasswordFile
from devicekit import AckStage, AlarmKind
from devicekit.bundle import ProvisioningBundle, load_bundle
from devicekit.wristband import Wristband
from hub.admin import AdminError, resume_device, suspend_device
from hub.db import make_engine
from hub.models import Device
from sdk.errors import ConflictError, NotFoundError
from sdk.models import ApiRole
from tests.support.api import ApiHub, new_defender, unique
from tests.support.brokers import try_connect
from tests.support.hubs import RunningHub
from tests.support.receivers import wait_until
from tests.support.sdk import MODES, Both
from tests.support.sites import TlsSite, make_tls_site, natalia


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> TlsSite:
    return make_tls_site(tmp_path / "site", capsys)


def provision(
    site: TlsSite, capsys: pytest.CaptureFixture[str], device_id: str, *options: str
) -> ProvisioningBundle:
    out = site.directory / f"bundles-{len(list(site.directory.glob('bundles-*')))}"
    code, _, err = natalia(
        capsys, "device", "provision", device_id, "--out", str(out), *options, *site.c
    )
    assert code == 0, err
    return load_bundle(out / f"{device_id}.bundle.json")


def crl_reason(site: TlsSite, serial: int) -> x509.ReasonFlags | None:
    crl = x509.load_pem_x509_crl(site.pki.crl.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return None
    return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason


def engine_of(site: TlsSite):
    return make_engine(site.config.database.url)


# -- admin and CLI -----------------------------------------------------------------------------


def test_resume_gives_a_new_password_and_takes_the_certificate_off_hold(
    site: TlsSite, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = provision(site, capsys, "wb-1", "--defender", "1", "--cert")
    accounts = PasswordFile(site.data_dir / "passwd")
    serial = site.pki.device_serial("wb-1")
    assert serial is not None
    code, _, err = natalia(capsys, "device", "resume", "wb-1", *site.c)
    assert code == 2 and "not suspended" in err
    assert natalia(capsys, "device", "suspend", "wb-1", *site.c)[0] == 0
    assert crl_reason(site, serial) is x509.ReasonFlags.certificate_hold
    assert "wb-1" not in accounts

    code, out, _ = natalia(capsys, "device", "resume", "wb-1", *site.c)
    assert code == 0
    [password] = re.findall(r"new broker password \(shown once\): (\S+)", out)
    assert password != bundle.password and accounts.check("wb-1", password)
    assert f"certificate {serial:x} taken off hold" in out
    assert crl_reason(site, serial) is None
    with Session(engine_of(site)) as session:
        device = session.get(Device, "wb-1")
        assert device is not None and device.active and device.key == bundle.key
    _, listing, _ = natalia(capsys, "device", "list", *site.c)
    assert re.search(r"wb-1\tdefender 1\tactive", listing)


def test_a_revoked_device_cannot_be_resumed_but_can_be_rekeyed(
    site: TlsSite, capsys: pytest.CaptureFixture[str]
) -> None:
    first = provision(site, capsys, "wb-1", "--defender", "1", "--cert")
    serial = site.pki.device_serial("wb-1")
    assert serial is not None
    assert natalia(capsys, "device", "revoke", "wb-1", *site.c)[0] == 0
    code, _, err = natalia(capsys, "device", "resume", "wb-1", *site.c)
    assert code == 2 and "natalia device provision wb-1 --rekey" in err
    assert "wb-1" not in PasswordFile(site.data_dir / "passwd")  # nothing was re-created
    assert crl_reason(site, serial) is x509.ReasonFlags.key_compromise

    engine = engine_of(site)
    with Session(engine) as session:  # marks of the old key, which must not survive it
        device = session.get(Device, "wb-1")
        assert device is not None
        device.alarm_seq, device.telemetry_seq = 41, 42
        session.add(device)
        session.commit()
    code, _, err = natalia(
        capsys, "device", "provision", "wb-1", "--rekey", "--defender", "2", *site.c
    )
    assert code == 2 and "belongs to defender 1" in err
    again = provision(site, capsys, "wb-1", "--rekey", "--cert")
    assert again.key != first.key and again.password != first.password
    assert again.client_cert != first.client_cert
    assert crl_reason(site, serial) is x509.ReasonFlags.key_compromise  # stays revoked
    with Session(engine) as session:
        device = session.get(Device, "wb-1")
        assert device is not None and device.active and device.key == again.key
        assert (device.alarm_seq, device.telemetry_seq) == (None, None)


def test_rekey_supersedes_a_certificate_it_does_not_replace(
    site: TlsSite, capsys: pytest.CaptureFixture[str]
) -> None:
    provision(site, capsys, "wb-1", "--defender", "1", "--cert")
    serial = site.pki.device_serial("wb-1")
    assert serial is not None
    provision(site, capsys, "wb-1", "--rekey")
    assert crl_reason(site, serial) is x509.ReasonFlags.superseded
    code, _, err = natalia(capsys, "device", "provision", "wb-404", "--rekey", *site.c)
    assert code == 2 and "no device 'wb-404'" in err


def test_resume_errors_name_the_problem(site: TlsSite, capsys) -> None:
    engine = engine_of(site)
    with pytest.raises(AdminError, match="no device"):
        resume_device(engine, "wb-404", site.data_dir)
    with pytest.raises(AdminError, match="data_dir"):
        resume_device(engine, "wb-404", None)


def test_a_resumed_wristband_reconnects_and_its_alarm_is_acked(
    site: TlsSite, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Over the certificate listener: the CRL hold is lifted for the broker too (SIGHUP)."""
    bundle = provision(site, capsys, "wb-1", "--defender", "1", "--cert")
    broker = site.start_broker()
    state = tmp_path / "wb-1"
    try:
        with RunningHub(site.config):
            band = Wristband.from_bundle(bundle, state_dir=state, max_reconnect_delay=1)
            with band:
                band.wait_connected(10)
                first = band.trigger(AlarmKind.PANIC)
                band.wait_for_ack(first.alarm_id, AckStage.RECEIVED, timeout=20)
                done = suspend_device(engine_of(site), "wb-1", site.data_dir)
                assert done.broker_reloaded and done.certificate_serial is not None
                wait_until(lambda: not band.connected, 10)
            # On hold means refused: even with its old password back, the certificate is not let in.
            accounts = PasswordFile(site.data_dir / "passwd")
            accounts.set("wb-1", bundle.password)
            broker.reload()
            probe = Wristband.from_bundle(bundle, state_dir=tmp_path / "probe")
            with probe, pytest.raises(TimeoutError):
                probe.wait_connected(3)
            resumed = resume_device(engine_of(site), "wb-1", site.data_dir)
            assert resumed.broker_reloaded and resumed.certificate_serial is not None
            # The old password is refused; the new one with the same certificate gets in.
            assert try_connect("127.0.0.1", site.plain_port, "wb-1", bundle.password) != 0
            flashed = bundle.model_copy(update={"password": resumed.password})
            band = Wristband.from_bundle(flashed, state_dir=state)
            with band:
                band.wait_connected(10)
                second = band.trigger(AlarmKind.PANIC)
                band.wait_for_ack(second.alarm_id, AckStage.RECEIVED, timeout=20)
    finally:
        broker.stop()


# -- HTTP API and SDK ------------------------------------------------------------------------


def accepts_login(api: ApiHub, username: str, password: str) -> bool:
    return try_connect(api.broker.host, api.broker.port, username, password) == 0


def test_api_resume(api: ApiHub) -> None:
    with api.client(ApiRole.HQ) as client:
        defender_id = new_defender(client)
        kept, seized = unique("wb-back"), unique("wb-gone")
        old = {}
        for device_id in (kept, seized):
            made = client.post("/v1/devices", json={"id": device_id, "defender_id": defender_id})
            old[device_id] = made.json()["password"]
        active = client.post(f"/v1/devices/{kept}/resume")
        assert client.post(f"/v1/devices/{kept}/suspend").status_code == 200
        assert client.post(f"/v1/devices/{seized}/revoke").status_code == 200
        resumed = client.post(f"/v1/devices/{kept}/resume")
        revoked = client.post(f"/v1/devices/{seized}/resume")
        unknown = client.post("/v1/devices/no-such-device/resume")
        got = client.get(f"/v1/devices/{kept}").json()
    with api.client(ApiRole.READ_ONLY) as reader:
        assert reader.post(f"/v1/devices/{kept}/resume").status_code == 403
    assert active.status_code == 409 and "not suspended" in active.json()["detail"]
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["device_id"] == kept and body["broker_reloaded"] is True
    assert body["certificate_released"] is False  # it had no certificate
    assert body["password"] != old[kept] and "key" not in body
    assert got["active"] is True
    wait_until(lambda: accepts_login(api, kept, body["password"]))
    assert not accepts_login(api, kept, old[kept])
    assert revoked.status_code == 409 and "--rekey" in revoked.json()["detail"]
    assert unknown.status_code == 404


@pytest.fixture(params=MODES)
def sdk(api: ApiHub, request: pytest.FixtureRequest) -> Iterator[Both]:
    both = Both(api, request.param)
    yield both
    both.close()


def test_sdk_resume(sdk: Both, api: ApiHub) -> None:
    defender = sdk(lambda c: c.defenders.create(name=unique("Wearer")))
    device_id = unique("wb-sdk")
    sdk(lambda c: c.devices.create(device_id=device_id, defender_id=defender.id))
    sdk(lambda c: c.devices.suspend(device_id))
    resumed = sdk(lambda c: c.devices.resume(device_id))
    assert resumed.device_id == device_id and not resumed.certificate_released
    wait_until(lambda: accepts_login(api, device_id, resumed.password))
    with pytest.raises(ConflictError):
        sdk(lambda c: c.devices.resume(device_id))
    with pytest.raises(NotFoundError):
        sdk(lambda c: c.devices.resume(unique("nobody")))
