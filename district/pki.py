"""The site CA and the certificates it signs, made with ``cryptography`` (no hand-rolled crypto).

* The **site CA**: a self-signed ECDSA P-256 certificate, ``BasicConstraints
  CA:TRUE, pathlen 0``, key usage ``keyCertSign, cRLSign``; 10 years.
* The **broker certificate**: ``serverAuth``, the broker's DNS names and IP
  addresses as subjectAltNames (what clients check the hostname against); 825 days.
* **Client certificates**: ``clientAuth``, common name = the MQTT username; 825 days.

Keys are ECDSA P-256 (fast handshakes on a Raspberry Pi), written as PKCS#8
PEM, unencrypted, with mode 0600 (a service must read its key unattended:
the file mode is the protection, and :func:`common.mqtt_security.check_private`
refuses a key other users may read). Certificates are PEM, mode 0644.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825
#: Backdating, so a device whose clock is a little behind still accepts a fresh certificate.
BACKDATE = dt.timedelta(hours=1)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically with ``data``, created with ``mode`` (never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path: Path) -> x509.Certificate:
    """A PEM certificate; raises :class:`ValueError` naming the file if it is not one."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path} is not a PEM certificate: {exc}") from None


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM EC private key; raises :class:`ValueError` naming the file (never its content)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


@dataclass(frozen=True)
class CA:
    """The site CA: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str, now: dt.datetime | None = None) -> CA:
        """A new self-signed CA called ``name`` (its common name)."""
        now = now or dt.datetime.now(dt.UTC)
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CA:
        """The CA from its PEM files; raises :class:`ValueError` if they do not belong together."""
        cert, key = load_cert(cert_path), load_key(key_path)
        if cert.public_key() != key.public_key():
            raise ValueError(f"{key_path} is not the key of {cert_path}")
        return cls(cert, key)

    def issue(
        self,
        common_name: str,
        *,
        server_names: list[str] | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A new key and a certificate for it: a server certificate for ``server_names`` (DNS names or
        IP addresses, at least one) when given, else a client certificate for ``common_name``."""
        now = now or dt.datetime.now(dt.UTC)
        key = new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server_names is not None:
            if not server_names:
                raise ValueError("a server certificate needs at least one DNS name or IP address")
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def server_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate's subjectAltName lists (as text)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def expires_within(cert: x509.Certificate, days: float, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    return cert.not_valid_after_utc - now < dt.timedelta(days=days)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca``'s key signed ``cert`` (and ``cert`` names ``ca`` as its issuer)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
