"""``natalia broker ca|cert`` and ``natalia device suspend|revoke`` as an operator runs them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.x509.oid import NameOID

from broker import PasswordFile
from broker.config import render
from broker.pki import PkiError, csr_public_key
from hub.cli import main
from hub.config import load_config
from hub.setup import broker_settings


def natalia(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def site(tmp_path: Path, capsys) -> tuple[str, str]:
    code, _, _ = natalia(capsys, "init", str(tmp_path / "site"), "--port", "18832")
    assert code == 0
    config = tmp_path / "site" / "hub.toml"
    c = ("-c", str(config))
    assert natalia(capsys, "defender", "add", "Ana", *c)[0] == 0
    assert natalia(capsys, "device", "add", "wb-1", "--defender", "1", *c)[0] == 0
    assert natalia(capsys, "device", "add", "wb-2", "--defender", "1", *c)[0] == 0
    return c


def pki_dir(c: tuple[str, str]) -> Path:
    return Path(c[1]).parent / "broker" / "pki"


def test_ca_server_and_device_certificates(site, capsys) -> None:
    c = site
    code, _, err = natalia(capsys, "broker", "cert", "server", "--host", "x", *c)
    assert code == 2 and "natalia broker ca init" in err  # no CA yet: one clear line
    assert natalia(capsys, "broker", "ca", "init", *c)[0] == 0
    code, _, err = natalia(capsys, "broker", "ca", "init", *c)
    assert code == 2 and "already exists" in err
    code, out, _ = natalia(
        capsys, "broker", "cert", "server", "--host", "mqtt.example.org", "--host", "10.0.0.5", *c
    )
    assert code == 0
    server = x509.load_pem_x509_certificate((pki_dir(c) / "server.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]

    code, out, _ = natalia(capsys, "broker", "cert", "device", "wb-1", *c)
    assert code == 0 and "BEGIN" not in out  # paths only, never key material
    device = x509.load_pem_x509_certificate((pki_dir(c) / "devices" / "wb-1.crt").read_bytes())
    assert device.subject.rfc4514_string() == "CN=wb-1"
    assert natalia(capsys, "broker", "cert", "device", "wb-9", *c)[0] == 2  # not registered
    for key in pki_dir(c).rglob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key

    # Re-issuing a device certificate puts the old one on the CRL (superseded).
    first = device.serial_number
    assert natalia(capsys, "broker", "cert", "device", "wb-1", *c)[0] == 0
    crl = x509.load_pem_x509_crl((pki_dir(c) / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(first) is not None


def test_tls_settings_from_hub_toml_render_tls_listeners(site, capsys) -> None:
    c = site
    config_path = Path(c[1])
    config_path.write_text(
        config_path.read_text().replace(
            'data_dir = "broker"', 'data_dir = "broker"\ntls_port = 8883'
        )
    )
    assert natalia(capsys, "broker", "ca", "init", *c)[0] == 0
    assert natalia(capsys, "broker", "cert", "server", "--host", "localhost", *c)[0] == 0
    config = load_config(config_path)
    assert config.broker.data_dir is not None
    settings = broker_settings(
        config.broker.data_dir, config.broker.port, tls_port=config.broker.tls_port
    )
    text = render(settings).read_text()
    assert "listener 18832 127.0.0.1\n" in text
    assert "listener 8883 0.0.0.0\n" in text and "tls_version tlsv1.2" in text


def test_suspend_and_revoke(site, capsys) -> None:
    c = site
    accounts = PasswordFile(Path(c[1]).parent / "broker" / "passwd")
    code, out, _ = natalia(capsys, "device", "suspend", "wb-2", *c)
    assert code == 0 and "broker account removed" in out and "certificate" not in out
    assert "wb-2" not in accounts and "wb-1" in accounts
    _, listing, _ = natalia(capsys, "device", "list", *c)
    assert re.search(r"wb-2\tdefender 1\tsuspended", listing)
    assert re.search(r"wb-1\tdefender 1\tactive", listing)

    assert natalia(capsys, "broker", "ca", "init", *c)[0] == 0
    assert natalia(capsys, "broker", "cert", "device", "wb-1", *c)[0] == 0
    serial = x509.load_pem_x509_certificate(
        (pki_dir(c) / "devices" / "wb-1.crt").read_bytes()
    ).serial_number
    code, out, _ = natalia(capsys, "device", "revoke", "wb-1", *c)
    assert code == 0 and f"certificate {serial:x} revoked" in out
    assert "wb-1" not in accounts
    crl = x509.load_pem_x509_crl((pki_dir(c) / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert natalia(capsys, "device", "revoke", "wb-404", *c)[0] == 2
    code, _, err = natalia(capsys, "broker", "cert", "revoke", "wb-2", *c)
    assert code == 2 and "no certificate" in err


def _csr(common_name: str, key: Any = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def test_a_device_certificate_from_its_own_request_leaves_its_key_on_the_device(
    site, capsys, tmp_path: Path
) -> None:
    c = site
    assert natalia(capsys, "broker", "ca", "init", *c)[0] == 0
    assert natalia(capsys, "broker", "cert", "device", "wb-1", *c)[0] == 0  # hub-made key first
    device_key = ec.generate_private_key(ec.SECP256R1())
    csr = tmp_path / "wb-1.csr"
    csr.write_bytes(_csr("wb-1", device_key))
    code, out, _ = natalia(capsys, "broker", "cert", "device", "wb-1", "--csr", str(csr), *c)
    assert code == 0 and "private key" not in out
    cert = x509.load_pem_x509_certificate((pki_dir(c) / "devices" / "wb-1.crt").read_bytes())
    assert cert.public_key() == device_key.public_key()
    assert cert.subject.rfc4514_string() == "CN=wb-1"
    ca = x509.load_pem_x509_certificate((pki_dir(c) / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert not (pki_dir(c) / "devices" / "wb-1.key").exists()  # the hub-made key is gone


@pytest.mark.parametrize(
    ("request_pem", "reason"),
    [
        (lambda: _csr("wb-2"), "common name must be the device id"),
        (lambda: _csr("wb-1", rsa.generate_private_key(65537, 1024)), "too weak"),  # noqa: S505
        (lambda: _csr("wb-1", ec.generate_private_key(ec.SECP256K1())), "is not accepted"),
        (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", "not a PEM"),
    ],
    ids=["other-device", "rsa-1024", "secp256k1", "garbage"],
)
def test_a_bad_certificate_request_is_refused_with_its_reason(
    request_pem: Any, reason: str
) -> None:
    with pytest.raises(PkiError, match=reason):
        csr_public_key(request_pem(), "wb-1")


def test_a_request_signed_by_another_key_is_refused() -> None:
    genuine = x509.load_pem_x509_csr(_csr("wb-1"))
    other = ec.generate_private_key(ec.SECP256R1())
    # The subject and key of one request with the signature of another: no proof of possession.
    forged = (
        x509.CertificateSigningRequestBuilder().subject_name(genuine.subject).sign(other, SHA256())
    )
    der = bytearray(forged.public_bytes(serialization.Encoding.DER))
    key_der = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    swapped = genuine.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    start = der.find(key_der)
    der[start : start + len(key_der)] = swapped
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="signature is wrong"):
        csr_public_key(pem, "wb-1")
