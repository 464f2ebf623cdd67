"""The CLI's configuration file: which server the HTTP commands talk to, with which key.

``$XDG_CONFIG_HOME/conveyor/config.toml`` (``~/.config/conveyor/config.toml``
when the variable is unset), mode 0600, written by ``conveyor dev`` and
``conveyor login``::

    url = "http://127.0.0.1:8000"
    api_key = "cvk_..."

An option on the command line wins over its ``CONVEYOR_*`` variable, which
wins over this file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from conveyor.cli.common import fail

KEYS = ("url", "api_key")
_HEADER = (
    "# Conveyor CLI: the server the HTTP commands talk to, and the API key they send.\n"
    "# Written by `conveyor dev` and `conveyor login`; options and CONVEYOR_URL /\n"
    "# CONVEYOR_API_KEY win over it.\n"
)
# TOML basic strings escape these by name; other control characters as \uXXXX.
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


class ConfigUnavailable(Exception):
    """There is no place for the file: no ``XDG_CONFIG_HOME`` and no home directory."""


def config_path() -> Path:
    """Where the file is: under ``$XDG_CONFIG_HOME``, or ``~/.config``."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    # The XDG spec ignores a relative path: it would depend on the directory.
    if os.path.isabs(base):
        return Path(base) / "conveyor" / "config.toml"
    try:
        return Path.home() / ".config" / "conveyor" / "config.toml"
    except RuntimeError:
        raise ConfigUnavailable("no home directory; set XDG_CONFIG_HOME") from None


def read_config() -> dict[str, str]:
    """The file's ``url`` and ``api_key`` (those it has); empty when there is no file."""
    try:
        path = config_path()
    except ConfigUnavailable:
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}", 2) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"{path} is not valid TOML: {exc}", 2) from None
    values: dict[str, str] = {}
    for key in KEYS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise fail(f"{path}: `{key}` must be a string", 2)
        values[key] = value
    return values


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string, every character that needs it escaped."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def write_config(url: str, api_key: str) -> Path:
    """Save the URL and the key (mode 0600, replacing the file whole); return its path.

    The file is written beside its final place and renamed over it, so a reader
    never sees half of it and the key is never readable by others, not even
    for a moment.
    """
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = _HEADER + f"url = {toml_string(url)}\napi_key = {toml_string(api_key)}\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)  # O_CREAT's mode does not apply to an old file
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
