"""Secrets at rest: sealed with a key the database never holds.

What a stolen database dump must not reveal (SMTP passwords, webhook URLs,
push targets holding credentials) is stored *sealed*: AES-256-GCM under a
data key derived with HKDF-SHA256 from ``CONVEYOR_SECRET_KEY`` (any string of
at least 32 characters). A sealed value reads ``sealed:v1:<key id>:<base64>``;
the key id (a hash of the derived key, not the key) says which key sealed it,
so values sealed under a key listed in ``CONVEYOR_SECRET_KEYS_OLD`` still
open, and ``conveyor secrets rotate`` re-seals them under the current one.

Each value is sealed with a *context* (its tenant and what it is) as
associated data: a sealed value copied into another tenant's row, or from a
contact's targets into a password column, does not open.

Values written before sealing existed are plain text; they open as they are
and ``conveyor secrets rotate`` seals them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from conveyor.domain.errors import ConveyorError

PREFIX = "sealed:v1:"
MIN_KEY_LENGTH = 32
_NONCE_BYTES = 12


class SecretKeyMissing(ConveyorError):
    """A secret must be stored or read, and the server has no ``CONVEYOR_SECRET_KEY``."""

    code = "secret_key_missing"


class SecretUnreadable(ConveyorError):
    """A sealed value does not open with any key the server has (or was tampered with)."""

    code = "secret_unreadable"


@dataclass(frozen=True)
class _Key:
    kid: str
    aead: AESGCM = field(repr=False)


def _derive(secret: str) -> _Key:
    if len(secret) < MIN_KEY_LENGTH:
        raise ValueError(f"a secret key must be at least {MIN_KEY_LENGTH} characters")
    material = HKDF(
        algorithm=SHA256(), length=32, salt=b"conveyor", info=b"conveyor data key v1"
    ).derive(secret.encode())
    kid = hashlib.sha256(b"conveyor key id:" + material).hexdigest()[:16]
    return _Key(kid, AESGCM(material))


def is_sealed(value: str) -> bool:
    """True if ``value`` is a sealed secret rather than plain text."""
    return value.startswith(PREFIX)


class Vault:
    """Seals and opens secrets with the current key; opens with old keys too."""

    def __init__(self, current: str | None, old: Sequence[str] = ()) -> None:
        """Derive the keys (``ValueError`` if one is shorter than 32 characters)."""
        self._current = _derive(current) if current else None
        self._keys = {k.kid: k for k in (_derive(s) for s in old if s)}
        if self._current is not None:
            self._keys[self._current.kid] = self._current

    @property
    def can_seal(self) -> bool:
        """True if a current key is configured."""
        return self._current is not None

    def seal(self, plaintext: str, context: str) -> str:
        """``plaintext`` sealed under the current key, bound to ``context``."""
        if self._current is None:
            raise SecretKeyMissing(
                "this server has no CONVEYOR_SECRET_KEY, so it stores no secrets (SMTP "
                "passwords, webhook URLs, push targets with credentials); ask its operator "
                "to set one"
            )
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._current.aead.encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self._current.kid}:{body}"

    def open(self, stored: str, context: str) -> str:
        """The plain text of a stored value (plain text stays as it is)."""
        if not is_sealed(stored):
            return stored
        kid, _, body = stored[len(PREFIX) :].partition(":")
        key = self._keys.get(kid)
        if key is None:
            if not self._keys:
                raise SecretKeyMissing(
                    "a stored secret cannot be read: this server has no CONVEYOR_SECRET_KEY"
                )
            raise SecretUnreadable(
                f"a stored secret was sealed with a key this server does not have (key id "
                f"{kid}); add that key to CONVEYOR_SECRET_KEYS_OLD"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = key.aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise SecretUnreadable(
                "a stored secret does not open: it was altered or moved"
            ) from None
        return plain.decode()

    def needs_reseal(self, stored: str) -> bool:
        """True if ``stored`` is plain text or sealed under a key other than the current one."""
        if self._current is None:
            return False
        if not is_sealed(stored):
            return True
        return not stored[len(PREFIX) :].startswith(self._current.kid + ":")

    def reseal(self, stored: str, context: str) -> str:
        """``stored`` opened and sealed again under the current key."""
        return self.seal(self.open(stored, context), context)
