"""TLS for STARTTLS and implicit TLS: a certificate given, or one made up.

``server.tls: auto`` makes a self-signed certificate for the server's host
name at start, as local mail catchers do; clients must then skip
verification, which test clients do anyway.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sesrx.config import TlsConfig
from sesrx.errors import StartError

__all__ = ["server_context"]


def server_context(tls: TlsConfig, hostname: str) -> ssl.SSLContext:
    """Return the server's TLS context; raise StartError if it cannot be made."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        if tls.cert is not None and tls.key is not None:
            context.load_cert_chain(tls.cert, tls.key)
        else:
            _load_self_signed(context, hostname)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise StartError(f"cannot set up TLS: {exc}") from exc
    return context


def _load_self_signed(context: ssl.SSLContext, hostname: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
        .sign(key, hashes.SHA256())
    )
    # ssl only loads certificates from files; they live only while loading.
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_path, key_path)
