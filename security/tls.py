"""The fleet's own certificate authority for the broker's TLS listener, with the `cryptography` package.

`ensure_ca(directory)` creates `ca.crt`/`ca.key` once; `issue(directory, name, ...)` signs a certificate
for the broker (server, with its host names and addresses) or for a node (client, common name = node id).
Keys are ECDSA P-256; certificates are valid for `valid_days`. Nothing here talks to the network.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.files import write_private, write_public

logger = logging.getLogger(__name__)

CA_NAME = "ca"
DEFAULT_VALID_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf certificate


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where one certificate and its private key are."""

    cert: Path
    key: Path


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey), f"{path} is not an EC private key"
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ensure_ca(directory: Path | str, valid_days: int = 3650) -> CertFiles:
    """The fleet CA under `directory` (`ca.crt`, `ca.key`), created on first use."""
    directory = Path(directory)
    files = CertFiles(directory / f"{CA_NAME}.crt", directory / f"{CA_NAME}.key")
    if files.cert.exists() and files.key.exists():
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    if not write_private(files.key, _key_pem(key)):  # another process created it first: use theirs
        key = _load_key(files.key)
        if files.cert.exists():
            return files
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("edgefleet CA"))
        .issuer_name(_name("edgefleet CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    logger.info("created the fleet certificate authority in %s", directory)
    return files


def issue(directory: Path | str, name: str, *, server: bool, hosts: tuple[str, ...] = (),
          valid_days: int = DEFAULT_VALID_DAYS, reuse: bool = True) -> CertFiles:
    """A certificate `<name>.crt` + `<name>.key` signed by the fleet CA in `directory`.

    `server`: for the broker's listener, with `hosts` (names or IP addresses) as subject alternative
    names; else a client certificate whose common name is the node id. `reuse` keeps an existing pair.
    """
    directory = Path(directory)
    files = CertFiles(directory / f"{name}.crt", directory / f"{name}.key")
    if reuse and files.cert.exists() and files.key.exists():
        return files
    ca = ensure_ca(directory)
    ca_key = _load_key(ca.key)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(host) for host in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    files.key.unlink(missing_ok=True)
    write_private(files.key, _key_pem(key))
    write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    logger.info("issued %s certificate %s", "server" if server else "client", files.cert)
    return files


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def common_name(cert_path: Path | str) -> str:
    """The common name a certificate was issued to (a node id for client certificates)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
