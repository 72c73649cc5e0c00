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
| ``retired/ca.key`` / ``.crt`` | the previous CA during a CA rollover (``rollover``, ``retire``) |

During a rollover ``ca.crt`` holds the new CA certificate first (the one ``ca.key`` signs with)
and then the retired one, so the broker and devices trust both, and ``crl.pem`` holds one CRL
signed by each CA, both listing every revocation.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
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

    def _load_ca(
        self, directory: Path | None = None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The CA key and certificate (the first one in ``ca.crt``) in ``directory``."""
        directory = directory or self.directory
        key_path, cert_path = directory / "ca.key", directory / "ca.crt"
        if not key_path.exists() or not cert_path.exists():
            raise PkiError(f"no CA in {directory}: run `natalia broker ca init` first")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path} is not an EC key")
        return key, x509.load_pem_x509_certificates(cert_path.read_bytes())[0]

    # -- CA rollover ------------------------------------------------------------------------

    @property
    def retired_dir(self) -> Path:
        return self.directory / "retired"

    def rollover(self, name: str = "Natalia broker CA", days: int = CA_DAYS) -> Path:
        """Start a CA rollover: a new CA issues from now on; the old one stays trusted.

        The old CA moves to ``retired/``; ``ca.crt`` becomes new + old and ``crl.pem`` a CRL of
        each. The server certificate is left as it is: re-issue it only once every device
        trusts the new CA (broker/README.md, "CA rollover"), then :meth:`retire` the old one.
        """
        if self.retired_dir.exists():
            raise PkiError(
                f"a CA rollover is under way ({self.retired_dir}): finish it with "
                "`natalia broker ca retire` first"
            )
        old_pem = self._load_ca()[1].public_bytes(serialization.Encoding.PEM)
        self.retired_dir.mkdir(mode=0o700)
        os.replace(self.ca_key, self.retired_dir / "ca.key")
        _write(self.retired_dir / "ca.crt", old_pem, 0o644)
        self.ca_cert.unlink()
        self.init_ca(name, days)
        _write(self.ca_cert, self.ca_cert.read_bytes() + old_pem, 0o644)
        return self.ca_cert

    def retire(self) -> Path:
        """End a CA rollover: trust only the new CA; the old CA's key is deleted."""
        if not self.retired_dir.exists():
            raise PkiError("no CA rollover under way: start one with `natalia broker ca rollover`")
        current = self._load_ca()[1].public_bytes(serialization.Encoding.PEM)
        _write(self.ca_cert, current, 0o644)
        shutil.rmtree(self.retired_dir)
        self.write_crl()
        return self.ca_cert

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

    def issue_device(
        self, device_id: str, days: int = DEVICE_DAYS, csr: bytes | None = None
    ) -> Path:
        """(Re)issue a device's client certificate (CN = device id); a previous one is revoked.

        With ``csr`` (PEM) the certificate is for the key pair the device made itself: its
        private key never leaves the device, and no key file is written here.
        """
        validate_device_id(device_id)
        public_key = None if csr is None else csr_public_key(csr, device_id)
        old = self.device_serial(device_id)
        self._issue(
            self.device_key(device_id),
            self.device_cert(device_id),
            device_id,
            days,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            None,
            public_key,
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
        public_key: CertificatePublicKeyTypes | None = None,
    ) -> None:
        """Sign a certificate for ``public_key``, or for a new key written to ``key_path``."""
        ca_key, ca_cert = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1()) if public_key is None else None
        now = datetime.now(UTC)
        not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key() if key is not None else public_key)  # type: ignore[arg-type]
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
        if key is not None:
            _write_key(key_path, key)
        else:  # the device holds its key: nothing of an earlier one may stay here
            key_path.unlink(missing_ok=True)
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
        self._save_revocations(entries.values())

    def release_hold(self, device_id: str) -> int | None:
        """Take the device's current certificate off the CRL if it is only on hold (suspended).

        Returns its serial, or None when it was not on hold; a revoked or superseded
        certificate stays on the CRL for good.
        """
        serial = self.device_serial(device_id)
        entries = {r.serial: r for r in self.revocations()}
        if serial is None or serial not in entries or entries[serial].reason != "suspended":
            return None
        del entries[serial]
        self._save_revocations(entries.values())
        return serial

    def _save_revocations(self, entries: Iterable[Revocation]) -> None:
        text = json.dumps([asdict(r) for r in entries], indent=1)
        _write(self.revoked_file, text.encode(), 0o600)
        self.write_crl()

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """Sign a fresh CRL listing every revocation (also to renew it before it lapses).

        During a CA rollover the retired CA signs a second one with the same entries: OpenSSL
        checks a client certificate against the CRL of its own issuer.
        """
        signers = [self.directory] + ([self.retired_dir] if self.retired_dir.exists() else [])
        pem = b"".join(self._signed_crl(self._load_ca(signer), days) for signer in signers)
        _write(self.crl, pem, 0o644)
        return self.crl

    def _signed_crl(
        self, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], days: int
    ) -> bytes:
        ca_key, ca_cert = ca
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
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def csr_public_key(pem: bytes, device_id: str) -> CertificatePublicKeyTypes:
    """The public key of a device's certificate signing request, once it is checked: a valid
    PEM CSR, signed by its own key (proof that the device holds it), CN = ``device_id``, and an
    EC P-256/P-384 or RSA >= 2048-bit key. ``PkiError`` otherwise."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise PkiError(
            "not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST)"
        ) from None
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature is wrong: it was not signed by the key it carries")
    names = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [device_id]:
        raise PkiError(f"the CSR's common name must be the device id {device_id!r}, not {names}")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise PkiError(f"EC curve {key.curve.name} is not accepted: use P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise PkiError(f"an RSA key of {key.key_size} bits is too weak: use 2048 or more")
    else:
        raise PkiError(f"{type(key).__name__} keys are not accepted: use EC P-256 or RSA")
    return key


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
