"""Database setup. The differences between SQLite and PostgreSQL live here alone.

SQLite: WAL, ``synchronous=NORMAL``, a generous busy timeout (it rides out
lock contention rather than failing fast), and ``BEGIN IMMEDIATE`` for write
transactions so two writers queue at BEGIN instead of failing when one
upgrades its read lock. PostgreSQL: psycopg 3 with a connection pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from psycopg.types.string import TextLoader
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conveyor.store.types import dumps as json_dumps
from conveyor.store.types import loads as json_loads

_READONLY = "conveyor_readonly"
_SIGNALS = "conveyor_signals"
TASKS = "tasks"  # the topic that wakes workers
T = TypeVar("T")
# PostgreSQL's deadlock_detected and serialization_failure: the transaction was
# rolled back whole and the same work may simply be done again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
RETRIES = 3


def is_transient(exc: BaseException) -> bool:
    """True for an error that rolled a transaction back whole and may pass on a retry."""
    if not isinstance(exc, DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES


# SQLSTATE classes of a database that cannot be reached: connection exceptions
# (08...) and the server shutting down or starting up (57P01-57P03).
_UNAVAILABLE_SQLSTATES = ("08", "57P")


def is_unavailable(exc: BaseException) -> bool:
    """True when no connection to the database can be had, or the one in use broke.

    Nothing is wrong with the work itself: wait (with back-off) and try again.
    A full connection pool counts too (no connection can be had). SQLite's
    ``database is locked`` after its busy timeout does as well.
    """
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError) or is_transient(exc):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def request_signal(conn: Connection, topic: str, payload: str = "") -> None:
    """Deliver ``(topic, payload)`` to in-process listeners once this transaction commits."""
    conn.info.setdefault(_SIGNALS, []).append((topic, payload))


def request_wakeup(conn: Connection) -> bool:
    """Ask that in-process workers be woken once this transaction commits.

    Returns False if this transaction had already asked (so a NOTIFY is sent
    once per transaction, not once per queued run).
    """
    if (TASKS, "") in conn.info.get(_SIGNALS, ()):
        return False
    request_signal(conn, TASKS)
    return True


def _uuids_as_text(dbapi_conn: Any, _record: Any) -> None:
    """Have psycopg read ``uuid`` columns as text: ids are strings here (``IdType``).

    Otherwise every id read becomes a ``uuid.UUID`` and then, through
    SQLAlchemy, a string again: a few microseconds per id, a dozen ids per
    run in every round.
    """
    dbapi_conn.adapters.register_loader("uuid", TextLoader)


class Database:
    """One database: an engine plus the transaction boundaries callers use."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 30,
        max_overflow: int = 0,
        echo: bool = False,
        session_timeouts: tuple[float, float] | None = None,
    ) -> None:
        """``session_timeouts``: PostgreSQL's ``statement_timeout`` and
        ``idle_in_transaction_session_timeout`` for every session, in seconds
        (``conveyor serve`` and ``worker``; maintenance commands run without).
        ``pool_size`` (opened as needed, then kept) and ``max_overflow``
        (closed when returned) bound the PostgreSQL connections of this
        process; SQLite ignores them.
        """
        self.url = make_url(url)
        self._wakeup_listeners: list[Callable[[], None]] = []
        self._signal_listeners: list[Callable[[str, str], None]] = []
        # SQLite admits one writer at a time. Threads of this process queue on a
        # lock (woken at once) rather than in SQLite's busy handler, which
        # sleeps in steps of up to 100 ms.
        self._write_lock = threading.RLock()
        self.flavour = "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"
        if self.flavour == "sqlite":
            self.engine = self._sqlite_engine(url, echo)
        else:
            # No pre-ping: it would cost a round trip per transaction; stale
            # connections are recycled instead, and one that broke is discarded
            # when it is used (is_unavailable), the work retried.
            # Sessions in UTC: psycopg then reads timestamps with the
            # ``timezone.utc`` tzinfo, which UTCDateTime passes through as they are.
            options = "-c timezone=UTC"
            if session_timeouts is not None:
                statement, idle = (int(t * 1000) for t in session_timeouts)
                options += (
                    f" -c statement_timeout={statement}"
                    f" -c idle_in_transaction_session_timeout={idle}"
                )
            connect_args: dict[str, Any] = {"options": options}
            self.engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=1800,
                echo=echo,
                connect_args=connect_args,
                json_serializer=json_dumps,
                json_deserializer=json_loads,
            )
            event.listen(self.engine, "connect", _uuids_as_text)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite flavour."""
        return self.flavour == "sqlite"

    @staticmethod
    def _sqlite_engine(url: str, echo: bool) -> Engine:
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False},
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy's begin event below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            readonly = conn.get_execution_options().get(_READONLY, False)
            conn.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an error.

        Signals requested in the transaction (``request_signal``; a wake-up when it
        enqueued work) reach in-process listeners after the commit; processes
        elsewhere hear PostgreSQL's NOTIFY.
        """
        lock = self._write_lock if self.is_sqlite else contextlib.nullcontext()
        with lock, self.engine.connect() as conn:
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                # Nothing was committed: forget the signals, unless the connection
                # broke (asking it would try to reconnect; it is discarded anyway).
                if not conn.invalidated:
                    conn.info.pop(_SIGNALS, None)
                raise
            signals = conn.info.pop(_SIGNALS, [])
        for topic, payload in dict.fromkeys(signals):
            if topic == TASKS:
                self.wake()
            for listener in list(self._signal_listeners):
                listener(topic, payload)

    def retrying(self, fn: Callable[[Connection], T], attempts: int = RETRIES) -> T:
        """``fn(conn)`` in a write transaction, run again if the database aborts it.

        PostgreSQL may abort one of two transactions that lock the same rows in
        opposite orders (a deadlock) or conflict otherwise; nothing of the
        aborted one stays, so it is run again, up to ``attempts`` times in all.
        ``fn`` must do only database work (it may run more than once).
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as conn:
                    return fn(conn)
            except DBAPIError as exc:
                if attempt == attempts or not is_transient(exc):
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    def add_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from any thread) whenever a commit enqueued work."""
        self._wakeup_listeners.append(listener)

    def remove_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._wakeup_listeners:
            self._wakeup_listeners.remove(listener)

    def add_signal_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(topic, payload)`` for every signal a commit carries."""
        self._signal_listeners.append(listener)

    def remove_signal_listener(self, listener: Callable[[str, str], None]) -> None:
        """Stop calling ``listener``."""
        if listener in self._signal_listeners:
            self._signal_listeners.remove(listener)

    def wake(self) -> None:
        """Wake in-process workers."""
        for listener in list(self._wakeup_listeners):
            listener()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (on SQLite it does not take the write lock)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_READONLY: True})
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()
