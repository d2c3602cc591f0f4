"""Secrets the IdP generates on first run and keeps under ``var/`` (never committed)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _write_once(path: Path, content: bytes) -> None:
    """Create ``path`` with mode 0600 unless it exists (O_EXCL: concurrent first runs agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def rsa_private_key_pem(path: Path) -> str:
    """The OIDC signing key (RS256): read it, or generate a 2048-bit key on first run."""
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_once(path, pem)
    return path.read_text()


def secret_key(path: Path) -> str:
    """A development SECRET_KEY kept under var/ (production sets SECRET_KEY)."""
    if not path.exists():
        _write_once(path, secrets.token_urlsafe(50).encode())
    return path.read_text().strip()
