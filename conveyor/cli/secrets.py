"""``conveyor secrets``, and the development secret key of ``conveyor dev``."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import typer
from pydantic import SecretStr

from conveyor.cli.common import DatabaseUrl, build_settings, fail, handle_errors, open_db
from conveyor.services import secrets as service
from conveyor.settings import Settings

log = logging.getLogger("conveyor.cli")

app = typer.Typer(help="Manage the secrets stored sealed (SMTP passwords, push targets).")


@app.command("rotate")
@handle_errors
def rotate(database_url: DatabaseUrl = None) -> None:
    """Re-seal every stored secret under CONVEYOR_SECRET_KEY.

    Values sealed under a key of CONVEYOR_SECRET_KEYS_OLD (or stored in clear
    by an older version) are opened and sealed again under the current key;
    once it reports nothing unreadable, the old keys may be removed.
    """
    settings = build_settings(database_url=database_url)
    with open_db(database_url, settings) as db:
        report = service.rotate(db, settings.vault())
    typer.echo(f"re-sealed: {report.resealed}  already current: {report.current}")
    for line in report.unreadable:
        typer.echo(f"unreadable: {line}", err=True)
    if report.unreadable:
        raise fail(
            f"{len(report.unreadable)} stored secrets open with no configured key; "
            "add their key to CONVEYOR_SECRET_KEYS_OLD and run again"
        )


def dev_secret_key(settings: Settings) -> Settings:
    """``conveyor dev``'s secret key: CONVEYOR_SECRET_KEY, else one kept in a file (0600).

    A laptop needs no key management, but the dev server stores secrets sealed
    like any other: the first start writes a random key to
    ``CONVEYOR_DEV_SECRET_KEY_FILE`` and later starts reuse it.
    """
    if settings.secret_key is not None:
        return settings
    path = Path(settings.dev_secret_key_file)
    key = path.read_text(encoding="utf-8").strip() if path.exists() else ""
    if not key:
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(key + "\n")
        log.warning(
            "conveyor dev: secrets are sealed with a development key kept in %s; "
            "`serve` and `worker` need CONVEYOR_SECRET_KEY to store any",
            path,
        )
    return settings.model_copy(update={"secret_key": SecretStr(key)})
