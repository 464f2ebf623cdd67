"""``conveyor serve --processes N``: several server processes behind one listening socket.

uvicorn's own supervisor does the work (``uvicorn.supervisors.Multiprocess``,
what ``uvicorn --workers N`` runs): the parent binds the socket once and
spawns N children, each a uvicorn server accepting on that socket, so the
kernel hands each new connection to one of them. A child is a fresh
interpreter (multiprocessing's ``spawn``), so it cannot be handed the
parent's ``Settings``: it builds its app with ``app_from_environment`` from
the ``CONVEYOR_*`` variables, which the parent first sets from its options.

What the parent does on its own:

- SIGTERM or SIGINT: each child gets SIGTERM and stops gracefully (requests
  in flight are answered, live streams closed), the parent waits for all of
  them and exits 0. SIGHUP replaces the children one by one.
- A child that dies while serving, or stops answering the parent's health
  check for ``HEALTHCHECK_SECONDS`` (our own check, ``_Supervisor``, in place
  of uvicorn's), is started again (uvicorn's choice, kept:
  one crashed process should not take the others' connections down), logged
  as a warning with its exit code. A child that fails while starting (a bad
  setting, a broken install) would fail again: the parent stops the others
  and exits 1.
- Metrics: every process must count into one place, or a scrape answers one
  process's share. Without ``PROMETHEUS_MULTIPROC_DIR`` the parent makes a
  temporary directory, gives it to the children and removes it at exit.

SQLite is refused: it has one writer at a time, so more processes only
queue on its lock (the message says so; ``refusal``).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import time
from typing import Any

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from conveyor import metrics
from conveyor.settings import Settings

log = logging.getLogger("conveyor.cli")

APP_FACTORY = "conveyor.cli.serving:app_from_environment"
# Seconds a child may take to answer the parent's health check before it is
# killed as hung and replaced (``_Supervisor``).
HEALTHCHECK_SECONDS = 30.0


def refusal(settings: Settings) -> str | None:
    """Why ``settings`` cannot run ``serve_processes`` processes, or None if they can."""
    if settings.serve_processes <= 1:
        return None
    if make_url(settings.database_url).get_backend_name() != "sqlite":
        return None
    return (
        f"--processes {settings.serve_processes} needs PostgreSQL: SQLite admits one "
        "writer at a time, so more server processes would only queue on its lock. "
        "Run one process (the default) on SQLite, or set CONVEYOR_DATABASE_URL "
        "(or --database-url) to a PostgreSQL database."
    )


def export_settings(settings: Settings) -> None:
    """Put what the command line chose into the environment the children inherit.

    Each child reads ``CONVEYOR_*`` alone: an option given to the parent
    (``--database-url``, ``--log-level``...) would otherwise be lost.
    """
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    chosen = {
        "CONVEYOR_DATABASE_URL": settings.database_url,
        "CONVEYOR_HOST": settings.host,
        "CONVEYOR_PORT": str(settings.port),
        "CONVEYOR_LOG_LEVEL": str(level),
    }
    if settings.log_format is not None:
        chosen["CONVEYOR_LOG_FORMAT"] = settings.log_format
    os.environ.update(chosen)


def serve_processes(settings: Settings, options: dict[str, Any]) -> int:
    """Run ``settings.serve_processes`` servers until a signal stops them; the exit code.

    ``options`` are ``uvicorn.Config`` arguments (``conveyor.cli.main.uvicorn_options``).
    """
    export_settings(settings)
    own_dir = None
    if metrics.multiprocess_dir() is None:
        # Set before any child starts: prometheus_client reads it on import.
        own_dir = tempfile.mkdtemp(prefix="conveyor-metrics-")
        os.environ[metrics.MULTIPROC_ENV] = own_dir
    try:
        config = Config(APP_FACTORY, factory=True, workers=settings.serve_processes, **options)
        log.info(
            "starting %d server processes; rate limits, stream caps and the key cache "
            "are per process (docs/operating.md, several server processes)",
            settings.serve_processes,
        )
        sock = config.bind_socket()
        try:
            supervisor = _Supervisor(config, sockets=[sock])
            supervisor.run()
            for child in supervisor.processes:
                metrics.process_exited(child.pid)  # an operator's directory outlives them
        finally:
            sock.close()
    finally:
        if own_dir is not None:
            os.environ.pop(metrics.MULTIPROC_ENV, None)
            shutil.rmtree(own_dir, ignore_errors=True)
    if supervisor.startup_failed:
        log.error("a server process failed to start (its log is above): stopped them all")
        return 1
    return 0


class _Supervisor(Multiprocess):
    """uvicorn's supervisor with a health check that waits long but notices a death at once.

    uvicorn's own check sends a ping and waits for the answer, 5 s by default:
    shorter than a child's start on a busy host (six starting at once on two
    cores were killed as hung and started again), while a longer wait also
    holds up noticing a child that died during it (the parent keeps its end
    of the pipe open, so the wait never sees the pipe close). This one waits
    up to ``HEALTHCHECK_SECONDS`` in short slices, checking in between
    whether the child still exists and whether a signal came.
    """

    startup_failed = False

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if self._answers(process):
                continue
            process.kill()  # hung; or it ended, and this reaps it
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving (a broken app or setting): a new one
                # would fail the same way. Stop them all; the parent exits 1.
                self.startup_failed = True
                self.should_exit.set()
                return
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement
            metrics.process_exited(process.pid)
            log.warning(
                "server process %s ended (exit code %s); started %s in its place",
                process.pid,
                process.exitcode,
                replacement.pid,
            )

    def _answers(self, process: Process) -> bool:
        """True when ``process`` answers a ping; False once it has ended or stayed silent."""
        deadline = time.monotonic() + HEALTHCHECK_SECONDS
        try:
            if not process.process.is_alive():
                return False
            process.parent_conn.send(b"ping")
            while not process.parent_conn.poll(0.25):
                if self.signal_queue:
                    return True  # handled first; the next round asks again
                if not process.process.is_alive() or time.monotonic() > deadline:
                    return False
            process.parent_conn.recv()
        except (OSError, EOFError, pickle.UnpicklingError):
            return False
        return True


def app_from_environment() -> FastAPI:
    """The app of one child of ``serve --processes N`` (uvicorn calls it in each child)."""
    from conveyor.api.app import create_app
    from conveyor.cli.common import configure_logging
    from conveyor.gc_tuning import freeze_startup_objects
    from conveyor.logs import default_format

    settings = Settings()
    configure_logging(settings.log_level, default_format("serve", settings.log_format))
    api = create_app(settings)
    freeze_startup_objects()
    return api
