"""The balancer's TLS certificate: the user's files, checked before anything starts, or a
local CA and a server certificate made once in the state folder, as mkcert does.

The local CA signs one certificate for the names a class reaches the balancer by
(``localhost``, ``127.0.0.1``, ``::1`` and the Compose service name ``balancer``). The CA's
key never leaves the folder and, like every key here, is mode 0600; the certificates are
public (0644), so students can hand the CA to ``curl --cacert``, also from a Compose volume.
Both are reused on the next start and made again when they are missing, unreadable, expired
or within ``RENEW_BEFORE`` of expiry.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common import CA_FILE

SERVER_NAMES = ("localhost", "balancer")
SERVER_ADDRESSES = ("127.0.0.1", "::1")
CA_KEY_FILE = "ca-key.pem"
CERT_FILE = "balancer.pem"
KEY_FILE = "balancer-key.pem"
CA_DAYS = 3650  # mkcert's CA lasts 10 years
CERT_DAYS = 825  # the longest a browser accepts for a server certificate (mkcert's too)
RENEW_BEFORE = datetime.timedelta(days=30)  # renewed this long before it expires
PUBLIC_MODE = 0o644
PRIVATE_MODE = 0o600


class CertificateError(ValueError):
    """The certificate cannot be used: one line saying which file and why."""


@dataclass(frozen=True)
class TlsFiles:
    """What the HTTPS listener serves; ``ca`` is the local CA clients must trust (None for
    the user's own certificate)."""

    cert: Path
    key: Path
    ca: Path | None = None


def checked_user_files(cert: Path, key: Path) -> TlsFiles:
    """The user's PEM certificate and key, refused in one line when either cannot be read or
    they do not belong together (the check an SSL context makes when it loads them)."""
    for path in (cert, key):
        if not path.is_file() or not os.access(path, os.R_OK):
            raise CertificateError(f"{path}: not a readable file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        raise CertificateError(
            f"{cert} and {key}: not a PEM certificate and its own private key ({reason})"
        ) from None
    except OSError as error:
        raise CertificateError(f"{cert} or {key}: {error.strerror or error}") from None
    return TlsFiles(cert, key)


def local_files(folder: Path, now: datetime.datetime | None = None) -> TlsFiles:
    """The local CA and the balancer's certificate in ``folder``: reused while valid for
    ``RENEW_BEFORE`` more, else made (a new CA only when the CA itself must be renewed)."""
    now = now or datetime.datetime.now(datetime.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = folder / CA_FILE, folder / CA_KEY_FILE
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    ca = _still_valid(ca_path, now)
    ca_key = _private_key(ca_key_path)
    if ca is None or ca_key is None or not _same_key(ca, ca_key):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _ca_certificate(ca_key, now)
        _write(ca_key_path, _key_pem(ca_key), PRIVATE_MODE)
        _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
        cert_path.unlink(missing_ok=True)  # signed by the old CA
    cert = _still_valid(cert_path, now)
    key = _private_key(key_path)
    if cert is None or key is None or not _same_key(cert, key) or cert.issuer != ca.subject:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, ca, ca_key, now)
        _write(key_path, _key_pem(key), PRIVATE_MODE)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return TlsFiles(cert_path, key_path, ca_path)


def _still_valid(path: Path, now: datetime.datetime) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert if cert.not_valid_after_utc - RENEW_BEFORE > now else None


def _private_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    """``key`` is the private half of ``cert``'s public key."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Written whole under a temporary name and renamed, so a balancer starting at the same
    time never reads half a file; a key is never readable by others, not even briefly."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ticslab local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = _name(f"ticslab CA {os.getpid()}-{int(now.timestamp())}")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> x509.Certificate:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_ADDRESSES]
    return (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
