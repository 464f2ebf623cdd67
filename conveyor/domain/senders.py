"""Which sender addresses a tenant may use on the operator's SMTP relay. Pure: no I/O.

The operator's relay sends with the operator's credentials and reputation, so
a tenant may not put just any ``from`` on it: its domain must be one the
operator allows for that tenant (``CONVEYOR_EMAIL_FROM_DOMAINS``, or the
tenant's own list set with ``conveyor tenants set-from-domains``). The
operator's own ``CONVEYOR_EMAIL_FROM`` is always allowed: the operator chose
it. A tenant's own SMTP server is the tenant's business and is not judged
here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from email.errors import InvalidHeaderDefect
from email.policy import default as default_policy
from email.utils import parseaddr

from conveyor.domain.errors import ConveyorError
from conveyor.domain.names import NamePatterns, pattern_name


class SenderNotAllowed(ConveyorError):
    """The `from` address is not one this tenant may send from through the server's relay."""

    code = "sender_not_allowed"


def _is_domain(name: str) -> bool:
    labels = name.split(".")
    return len(labels) >= 1 and all(
        0 < len(label) <= 63
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def sender_address(sender: str) -> str | None:
    """The one address a ``From`` value sends as, or None if it is not exactly one.

    The address must be the same whichever way it is read: as the ``From``
    header (the email package's parser, what recipients see) and as the
    envelope sender (``parseaddr``, what the relay checks). A value with two
    addresses, a group, or one the parsers disagree on names none.
    """
    header = default_policy.header_factory("From", sender)
    if any(isinstance(d, InvalidHeaderDefect) for d in header.defects):
        return None
    if any(group.display_name is not None for group in header.groups):
        return None
    addresses = header.addresses
    if len(addresses) != 1 or not addresses[0].domain or not addresses[0].username:
        return None
    spec = addresses[0].addr_spec
    return spec if spec == parseaddr(sender)[1] else None


def sender_domain(sender: str) -> str | None:
    """The domain of a ``From`` value's one address, lower case; None if it has not one."""
    address = sender_address(sender)
    if address is None:
        return None
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class SenderDomains:
    """Domains allowed in ``from``: exact names, and ``*.domain`` for names under it."""

    domains: NamePatterns = field(default_factory=NamePatterns)

    @classmethod
    def parse(cls, entries: Iterable[str] | str | None) -> SenderDomains:
        """Read a list (or comma-separated text); ``ValueError`` names an entry that is not one."""
        if isinstance(entries, str) or entries is None:
            entries = (entries or "").split(",")
        kept: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry.rstrip("."):
                continue
            if not _is_domain(pattern_name(entry)):
                raise ValueError(
                    f"{raw.strip()!r} is not a domain (write `example.com` or `*.example.com`)"
                )
            kept.append(entry)
        return cls(NamePatterns.of(kept))

    def entries(self) -> list[str]:
        """The domains as written, sorted (exact names, then ``*.`` ones)."""
        return self.domains.entries()

    def allows(self, sender: str) -> bool:
        """Whether ``sender``'s one address is in an allowed domain."""
        return self.domains.matches(sender_domain(sender))
