"""The broker's private CA: server and device certificates, revocation list (CRL).

Everything lives in one directory (``<broker data dir>/pki``). Private keys are EC P-256 and
written with mode 0600; certificates and the CRL are PEM. See broker/README.md for rotation and
revocation.

| file | what |
| --- | --- |
| ``ca.key`` / ``ca.crt`` | the CA; keep ``ca.key`` offline once devices are issued, if you can |
| ``server.key`` / ``server.crt`` | the broker's TLS certificate (SANs: DNS names and IPs) |
| ``devices/<id>.key`` / ``.crt`` | a device's client certificate, CN = the device id |
| ``crl.pem`` | the revocation list Mosquitto checks (``crlfile``) |
| ``revoked.json`` | what the CRL lists: serial, device id, reason, time |
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devicekit.topics import validate_device_id

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept; rotate before expiry (broker/README.md)
DEVICE_DAYS = 825
CRL_DAYS = 365  # re-sign with `natalia broker cert crl` before it lapses: an expired CRL
#                 makes OpenSSL refuse every client certificate.

#: Why a certificate is on the CRL. ``certificate_hold`` is the only reversible one (suspension).
REASONS = {
    "suspended": x509.ReasonFlags.certificate_hold,
    "revoked": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
}


class PkiError(ValueError):
    """The CA is missing, already exists, or a request cannot be carried out."""


@dataclass(frozen=True)
class Revocation:
    serial: int
    device_id: str
    reason: str
    revoked_at: str


@dataclass(frozen=True)
class Pki:
    """The CA in ``directory``; every method writes atomically, keys mode 0600."""

    directory: Path

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def revoked_file(self) -> Path:
        return self.directory / "revoked.json"

    def device_key(self, device_id: str) -> Path:
        validate_device_id(device_id)
        return self.directory / "devices" / f"{device_id}.key"

    def device_cert(self, device_id: str) -> Path:
        validate_device_id(device_id)
        return self.directory / "devices" / f"{device_id}.crt"

    @property
    def ready(self) -> bool:
        """CA, server certificate and CRL all exist: a TLS listener can be configured."""
        return all(p.exists() for p in (self.ca_cert, self.server_cert, self.server_key, self.crl))

    # -- the CA -----------------------------------------------------------------------------

    def init_ca(self, name: str = "Natalia broker CA", days: int = CA_DAYS) -> Path:
        """Create the CA key and self-signed certificate and an empty CRL; refuse to overwrite."""
        if self.ca_key.exists() or self.ca_cert.exists():
            raise PkiError(
                f"a CA already exists in {self.directory}; see 'CA rollover' in broker/README.md"
            )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key, key)
        _write(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self.write_crl()
        return self.ca_cert

    def _load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if not self.ca_key.exists() or not self.ca_cert.exists():
            raise PkiError(f"no CA in {self.directory}: run `natalia broker ca init` first")
        key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key} is not an EC key")
        return key, x509.load_pem_x509_certificate(self.ca_cert.read_bytes())

    # -- certificates -----------------------------------------------------------------------

    def issue_server(self, hosts: Sequence[str], days: int = SERVER_DAYS) -> Path:
        """(Re)issue the broker's certificate for ``hosts`` (DNS names or IP addresses)."""
        if not hosts:
            raise PkiError("give at least one --host: the name or address devices connect to")
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        self._issue(
            self.server_key,
            self.server_cert,
            hosts[0],
            days,
            ExtendedKeyUsageOID.SERVER_AUTH,
            x509.SubjectAlternativeName(names),
        )
        return self.server_cert

    def issue_device(self, device_id: str, days: int = DEVICE_DAYS) -> Path:
        """(Re)issue a device's client certificate (CN = device id); a previous one is revoked."""
        validate_device_id(device_id)
        old = self.device_serial(device_id)
        self._issue(
            self.device_key(device_id),
            self.device_cert(device_id),
            device_id,
            days,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            None,
        )
        if old is not None:
            self._add_revocation(old, device_id, "superseded")
        return self.device_cert(device_id)

    def _issue(
        self,
        key_path: Path,
        cert_path: Path,
        common_name: str,
        days: int,
        usage: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None,
    ) -> None:
        ca_key, ca_cert = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_key(key_path, key)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def device_serial(self, device_id: str) -> int | None:
        """Serial of the device's current certificate, or None when it has none."""
        path = self.device_cert(device_id)
        if not path.exists():
            return None
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number

    # -- revocation -------------------------------------------------------------------------

    def revoke_device(self, device_id: str, reason: str = "revoked") -> int | None:
        """Put the device's certificate on the CRL; return its serial (None: it has none)."""
        if reason not in REASONS:
            raise PkiError(f"unknown reason {reason!r}; one of {', '.join(REASONS)}")
        serial = self.device_serial(device_id)
        if serial is not None:
            self._add_revocation(serial, device_id, reason)
        return serial

    def revocations(self) -> list[Revocation]:
        if not self.revoked_file.exists():
            return []
        return [Revocation(**entry) for entry in json.loads(self.revoked_file.read_text())]

    def _add_revocation(self, serial: int, device_id: str, reason: str) -> None:
        entries = {r.serial: r for r in self.revocations()}
        previous = entries.get(serial)
        if previous is None or previous.reason == "suspended":
            entries[serial] = Revocation(
                serial, device_id, reason, datetime.now(UTC).isoformat(timespec="seconds")
            )
        text = json.dumps([asdict(r) for r in entries.values()], indent=1)
        _write(self.revoked_file, text.encode(), 0o600)
        self.write_crl()

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """Sign a fresh CRL listing every revocation (also to renew it before it lapses)."""
        ca_key, ca_cert = self._load_ca()
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + timedelta(days=days))
        )
        for entry in self.revocations():
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(datetime.fromisoformat(entry.revoked_at))
                .add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(ca_key, hashes.SHA256())
        _write(self.crl, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return self.crl


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` atomically; the file has ``mode`` from the first byte on."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)
