"""Contacts' push targets at rest: Apprise URLs sealed, device tokens as they are.

An Apprise URL holds credentials (bot tokens, passwords, webhook secrets), so
a contact stores it as ``{"shown": <masked>, "sealed": <sealed URL>}``
(``conveyor.crypto``) and shows only the masked form, to every key: the API,
expressions and templates (``contact.push_targets``), message rows and run
outputs all see ``tgram://1...f/987654321/``, never the URL. The sender opens
the sealed value just before the call. A device token (no ``://``) is not a
credential on its own and is stored and shown as it is.

A client that reads a contact and writes it back unchanged sends the masked
forms: a masked form that matches one of the contact's sealed targets keeps
that target, so a read-modify-write loses nothing and reveals nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.channels.push import shown_target
from conveyor.crypto import Vault

_PURPOSE = "contact.push_target"


def _context(tenant_id: str) -> str:
    return f"{tenant_id}:{_PURPOSE}"


def holds_credentials(target: str) -> bool:
    """True for a target that is a URL (Apprise reads credentials out of URLs)."""
    return "://" in target


def shown(entry: Any) -> str:
    """How a stored target is shown: masked when it is a URL, as it is otherwise."""
    if isinstance(entry, dict):
        return str(entry.get("shown", "***"))
    text = str(entry)
    return shown_target(text) if holds_credentials(text) else text


def shown_all(stored: Iterable[Any] | None) -> list[str]:
    """A contact's stored targets as they are shown."""
    return [shown(entry) for entry in stored or ()]


@dataclass(frozen=True)
class Prepared:
    """Targets a client sent, each with the entry that would store it."""

    items: tuple[tuple[str, Any], ...]

    def stored(self, current: Sequence[Any] | None) -> list[Any]:
        """The entries to store, keeping a current sealed target whose masked form was sent."""
        kept = {shown(e): e for e in current or () if isinstance(e, dict)}
        return [kept.get(sent, entry) for sent, entry in self.items]


def prepare(vault: Vault, tenant_id: str, targets: Iterable[str]) -> Prepared:
    """Seal the URLs among ``targets`` (outside any transaction: it parses and encrypts).

    Raises:
        SecretKeyMissing: a URL is given and the server has no secret key.
    """
    items = []
    for target in targets:
        if holds_credentials(target):
            entry: Any = {
                "shown": shown_target(target),
                "sealed": vault.seal(target, _context(tenant_id)),
            }
        else:
            entry = target
        items.append((target, entry))
    return Prepared(tuple(items))


def open_all(vault: Vault, tenant_id: str, stored: Iterable[Any] | None) -> list[tuple[str, str]]:
    """``(shown, target)`` for each stored target: what to show, and what to deliver to.

    Raises:
        SecretKeyMissing, SecretUnreadable: a sealed target cannot be opened.
    """
    pairs = []
    for entry in stored or ():
        if isinstance(entry, dict):
            pairs.append((shown(entry), vault.open(str(entry["sealed"]), _context(tenant_id))))
        else:
            pairs.append((shown(entry), str(entry)))
    return pairs


def reseal_all(vault: Vault, tenant_id: str, stored: Sequence[Any] | None) -> list[Any] | None:
    """The targets with every URL sealed under the current key; None if none needed it."""
    changed = False
    out: list[Any] = []
    for entry in stored or ():
        if isinstance(entry, dict) and vault.needs_reseal(str(entry["sealed"])):
            entry = {**entry, "sealed": vault.reseal(str(entry["sealed"]), _context(tenant_id))}
            changed = True
        elif isinstance(entry, str) and holds_credentials(entry):  # stored before sealing
            entry = {"shown": shown_target(entry), "sealed": vault.seal(entry, _context(tenant_id))}
            changed = True
        out.append(entry)
    return out if changed else None
