"""The provisioning bundle: all a wristband needs, written by ``natalia device provision``.

The operator's command writes the bundle as a JSON file (mode 0600) and as a QR code for the
device maker's flashing step; the firmware (or :meth:`devicekit.Wristband.from_bundle`) reads it.
Both sides use :class:`ProvisioningBundle`, so this module needs only pydantic and the standard
library. The format is specified in PROTOCOL.md, "Provisioning bundle".

The bundle holds the device's password and signing key: treat it like a private key (never log
it, delete it once the device is flashed).
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import tempfile
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devicekit.topics import PREFIX, validate_device_id

BUNDLE_FORMAT: Final = 1
#: The most bytes one QR code holds (version 40, error correction L, byte mode).
QR_MAX_BYTES: Final = 2953
_PEM_CERT: Final = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", flags=re.S
)


def certificate_fingerprints(pem: str) -> list[str]:
    """SHA-256 of the DER form of each certificate in ``pem``, as lowercase hex."""
    return [
        hashlib.sha256(ssl.PEM_cert_to_DER_cert(block)).hexdigest()
        for block in _PEM_CERT.findall(pem)
    ]


class ProvisioningBundle(BaseModel):
    """One device's identity, secrets and broker address (PROTOCOL.md, "Provisioning bundle")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["provisioning"] = "provisioning"
    format: Literal[1] = BUNDLE_FORMAT
    protocol: Literal[1] = 1  #: devicekit.protocol.PROTOCOL_VERSION
    device_id: str = Field(description="MQTT username = client id = topic segment.")
    username: str = Field(description="Always the device id.")
    password: str = Field(min_length=1, description="The broker password; secret.")
    key: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="Signing key, 64 lowercase hex; secret."
    )
    encrypt: bool = Field(description="Payloads must be encrypted with the key.")
    host: str = Field(min_length=1, max_length=253, pattern=r"^[^\s/]+$")
    port: int = Field(ge=1, le=65535, description="The broker's TLS port for this device.")
    cert: bool = Field(description="The device logs in with a client certificate (cert_port).")
    ca_sha256: list[str] = Field(
        min_length=1, description="SHA-256 of each CA certificate the device trusts (DER)."
    )
    ca_cert: str | None = Field(default=None, description="PEM of the CA certificate(s).")
    client_cert: str | None = Field(default=None, description="PEM, only with cert.")
    client_key: str | None = Field(default=None, description="PEM, only with cert; secret.")
    topic_prefix: str = Field(description="natalia/v1/devices/<device id>")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        validate_device_id(self.device_id)
        if self.username != self.device_id:
            raise ValueError("username must be the device id")
        if self.topic_prefix != f"{PREFIX}/{self.device_id}":
            raise ValueError(f"topic_prefix must be {PREFIX}/<device id>")
        if any(not re.fullmatch(r"[0-9a-f]{64}", value) for value in self.ca_sha256):
            raise ValueError("ca_sha256 holds 64-hex-character SHA-256 fingerprints")
        if self.ca_cert is not None and certificate_fingerprints(self.ca_cert) != self.ca_sha256:
            raise ValueError("ca_cert does not match ca_sha256")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key come together")
        if self.client_cert is not None and not self.cert:
            raise ValueError("a client certificate needs cert = true")
        return self

    @property
    def complete(self) -> bool:
        """Whether it holds every PEM it needs (a QR code too small for them leaves them out)."""
        return self.ca_cert is not None and (not self.cert or self.client_cert is not None)

    def to_json(self) -> str:
        """The bundle file's text: indented JSON, absent PEMs left out."""
        return self.model_dump_json(indent=1, exclude_none=True) + "\n"

    def qr_payload(self, limit: int = QR_MAX_BYTES) -> bytes:
        """What the QR code carries: the compact JSON of the bundle, or without the PEMs.

        When the whole bundle is over ``limit`` bytes, the QR carries everything but
        ``ca_cert``, ``client_cert`` and ``client_key``; the device then takes those from the
        bundle file and checks the CA against ``ca_sha256``, which the QR code always holds.
        """
        payload = self.model_dump_json(exclude_none=True).encode()
        if len(payload) <= limit:
            return payload
        reduced = self.model_copy(update={"ca_cert": None, "client_cert": None, "client_key": None})
        payload = reduced.model_dump_json(exclude_none=True).encode()
        if len(payload) > limit:
            raise ValueError(f"even without its certificates the bundle is over {limit} bytes")
        return payload

    def tls_context(self) -> ssl.SSLContext:
        """A TLS context that verifies the broker with the bundle's CA, with its client cert."""
        if self.ca_cert is None:
            raise ValueError(
                f"the bundle of {self.device_id} has no CA certificate (a QR code leaves it "
                "out when too large): use the bundle file, or pass tls= yourself"
            )
        context = ssl.create_default_context(cadata=self.ca_cert)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            if self.client_cert is None or self.client_key is None:
                raise ValueError(
                    f"the bundle of {self.device_id} lacks its client certificate: use the "
                    "bundle file"
                )
            _load_client_cert(context, self.client_cert, self.client_key)
        return context


class BundleError(ValueError):
    """Not a valid provisioning bundle; the message names the fields, never their values."""


def load_bundle(source: str | bytes | os.PathLike[str]) -> ProvisioningBundle:
    """A bundle from a file path, or from the JSON text itself (e.g. a scanned QR code).

    Raises :class:`BundleError` (a ``ValueError``) without quoting the input, which holds
    secrets, and ``OSError`` when the file cannot be read.
    """
    if isinstance(source, bytes) or (isinstance(source, str) and source.lstrip().startswith("{")):
        text = source
    else:
        text = Path(source).read_bytes()
    try:
        return ProvisioningBundle.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'bundle'}: {error['msg']}"
            for error in exc.errors(include_input=False)
        )
        raise BundleError(f"not a valid provisioning bundle: {problems}") from None


def _load_client_cert(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # ssl reads a certificate chain only from files: a private (0700) directory, removed at once.
    with tempfile.TemporaryDirectory(prefix="natalia-bundle-") as directory:
        path = Path(directory) / "client.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem.rstrip("\n") + "\n" + key_pem)
        context.load_cert_chain(path)
