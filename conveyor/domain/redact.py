"""What texts may say about where a call went. Pure: no I/O.

Error texts end up in step errors, message rows, run history and logs, which
every ``runs:read`` key reads. So a URL is shown as ``scheme://host/path``
(its userinfo, query and fragment hold tokens and passwords), and an endpoint
the operator configured is not shown at all: ``<operator webhook>``,
``<operator smtp>``. A library's own text (an exception's message) may repeat
the URL or its parts, so it is scrubbed of them before it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

OPERATOR_WEBHOOK = "<operator webhook>"
OPERATOR_SMTP = "<operator smtp>"
# Parts shorter than this are not replaced: they would mangle ordinary words.
_MIN_PART = 4


def shown_url(url: str) -> str:
    """``url`` as texts show it: ``scheme://host[:port]/path``, without userinfo or query."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<unreadable URL>"
    if not parts.scheme or not host:
        return "<unreadable URL>"
    where = f"[{host}]" if ":" in host else host
    if port is not None:
        where = f"{where}:{port}"
    return f"{parts.scheme}://{where}{parts.path}"


def _url_secrets(url: str) -> list[str]:
    """The parts of ``url`` a text must not repeat (each also percent-decoded).

    The userinfo whole (``user:password@``) and the password; the query whole
    and its values long enough to be tokens. A user name alone, or a short
    value (``true``), is left: replacing it would mangle ordinary words.
    """
    try:
        parts = urlsplit(url.strip())
        userinfo, at, _ = parts.netloc.rpartition("@")
        found = [parts.query, parts.fragment, userinfo + at, parts.password or ""]
        found += [v for v in (p.partition("=")[2] for p in parts.query.split("&")) if len(v) >= 8]
    except ValueError:
        found = []
    return found + [unquote(p) for p in found]


@dataclass(frozen=True)
class Scrubber:
    """Replaces what a text must not repeat: ``(secret, shown instead)`` pairs."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def for_url(cls, url: str, *, operator: bool = False, shown: str | None = None) -> Scrubber:
        """For a URL: shown as ``shown`` (default ``shown_url``), or as ``<operator webhook>``."""
        shown = OPERATOR_WEBHOOK if operator else shown or shown_url(url)
        pairs = [(url.strip(), shown)] + [(p, "***") for p in _url_secrets(url)]
        if operator:
            try:
                parts = urlsplit(url.strip())
                # The operator's path may be a credential too (hooks.slack.com/services/...).
                for part in (parts.netloc, parts.hostname or "", parts.path.rstrip("/")):
                    pairs.append((part, OPERATOR_WEBHOOK))
            except ValueError:
                pass
        return cls.of(pairs)

    @classmethod
    def of(cls, pairs: list[tuple[str, str]]) -> Scrubber:
        """For these ``(secret, shown instead)`` pairs (empty and very short secrets ignored)."""
        kept: dict[str, str] = {}
        for secret, shown in pairs:
            if len(secret) >= _MIN_PART:
                kept.setdefault(secret, shown)  # the first pair naming a text says how
        # Longest first, so a URL is replaced whole before its parts are.
        return cls(tuple(sorted(kept.items(), key=lambda p: -len(p[0]))))

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret, shown in self.pairs:
            text = text.replace(secret, shown)
        return text
