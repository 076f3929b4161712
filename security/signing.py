"""The center's ed25519 signing key for model indexes, and the check an edge makes with its public half.

The center creates `center_signing.key` (raw 32-byte seed, hex, mode 600) at first start and writes
`center_signing.pub` (hex) next to it; that public file is what an edge is provisioned with.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from security.files import write_private, write_public

logger = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".pub"
SIGNATURE_HEADER = "X-Edgefleet-Signature"  # HTTP header carrying the hex ed25519 signature of the body


class SignatureError(ValueError):
    """A signature is missing, malformed or does not verify; or no public key to check it with."""


class Signer:
    """Signs bytes with the center's key; `load_or_create(path)` makes the key at first use."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path | str) -> Signer:
        """The key at `path`, created (with its `.pub` file) if absent. Raises SignatureError for a bad file."""
        path = Path(path)
        if not path.exists():
            seed = Ed25519PrivateKey.generate().private_bytes_raw()
            if write_private(path, seed.hex().encode()):
                logger.info("created the center's index signing key %s", path)
        try:
            key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
        except ValueError as error:
            raise SignatureError(f"{path} is not a hex ed25519 key: {error}") from error
        signer = cls(key)
        public_path = path.with_name(path.stem + PUBLIC_SUFFIX)
        if not public_path.exists() or public_path.read_text().strip() != signer.public_hex:
            write_public(public_path, (signer.public_hex + "\n").encode())
        return signer

    @property
    def public_hex(self) -> str:
        return self._key.public_key().public_bytes_raw().hex()

    def sign(self, data: bytes) -> str:
        """Hex signature of `data`."""
        return self._key.sign(data).hex()


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """The center's public key from its `.pub` file. Raises SignatureError if it is missing or malformed."""
    path = Path(path)
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(path.read_text().strip()))
    except FileNotFoundError:
        raise SignatureError(f"no center public key at {path}: cannot check signed indexes "
                             "(copy the center's center_signing.pub there)") from None
    except ValueError as error:
        raise SignatureError(f"{path} is not a hex ed25519 public key: {error}") from error


def verify(public_key: Ed25519PublicKey, data: bytes, signature_hex: str | None) -> None:
    """Raises SignatureError unless `signature_hex` is the key's signature of `data`."""
    if not signature_hex:
        raise SignatureError("unsigned")
    try:
        public_key.verify(bytes.fromhex(signature_hex.strip()), data)
    except ValueError:
        raise SignatureError("signature is not hex") from None
    except InvalidSignature:
        raise SignatureError("bad signature") from None
