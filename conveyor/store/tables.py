"""Tables (SQLAlchemy Core). Every row carries ``tenant_id``; nothing crosses it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from conveyor.store.types import IdType, JSONType, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def uuid_column(name: str = "id", *args: Any, **kw: Any) -> Column[str]:
    """A UUID column holding ids as strings (native ``uuid`` on PostgreSQL)."""
    return Column(name, IdType(), *args, **kw)


# (index name suffix, column) of the partial indexes on the links between runs.
LINK_INDEXES = (("retry_of", "retry_of"), ("parent", "parent_run_id"), ("root", "root_run_id"))


# The condition of ix_runs_failure_source, word for word as its queries say it.
FAILURE_RUNS = "trigger_type = 'automation_failure'"


def _list_indexes(*specs: tuple[str, tuple[str, ...], tuple[str, ...]]) -> list[Index]:
    """Partial indexes over real (not dry) runs: tenant, the filter columns, list order.

    Each spec is (name, filter columns, trailing columns): columns after the
    list order that a query may test in the index without reading the row.
    SQLite uses a partial index only when the query repeats its condition word
    for word, and SQLAlchemy writes the lists' condition as ``dry_run = 0`` there.
    """
    return [
        Index(
            f"ix_runs_{name}",
            "tenant_id",
            *columns,
            "created_at",
            "id",
            *trailing,
            sqlite_where=text("dry_run = 0"),
            postgresql_where=text("NOT dry_run"),
        )
        for name, columns, trailing in specs
    ]


def in_dialect(dialect: str) -> Any:
    """An alembic ``include_object`` that leaves out what ``ddl_if`` keeps from ``dialect``.

    ``create_all`` honours ``Index.ddl_if`` but alembic's comparison does not, so
    the migrations' environment and the schema test pass this.
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect is None or only.dialect == dialect

    return include


def tenant_column() -> Column[str]:
    """The ``tenant_id`` every row carries."""
    return uuid_column("tenant_id", ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


tenants = Table(
    "tenants",
    metadata,
    uuid_column(primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    # Domains the tenant may send from through the operator's SMTP relay (a
    # list); null: CONVEYOR_EMAIL_FROM_DOMAINS applies.
    Column("email_from_domains", JSONType),
)

api_keys = Table(
    "api_keys",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    Column("label", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    # Written at most once a minute per key, after the request (conveyor.api.key_usage).
    Column("last_used_at", UTCDateTime),
)

# Who changed what among the things that grant access or send on the
# tenant's behalf: keys created and revoked, channel settings changed.
audit_log = Table(
    "audit_log",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    # The API key that acted; null when an operator acted from the CLI.
    uuid_column("key_id"),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=False),
    Column("target_id", String(64)),
    Column("client_address", String(64)),
    Column("details", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Listed newest first per tenant (ids are UUIDv7, so id order is time order).
    Index("ix_audit_log_tenant_id_id", "tenant_id", "id"),
)

automations = Table(
    "automations",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    Column("name", String(100), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("trigger_type", String(32), nullable=False),
    Column("current_version_id", IdType(), nullable=False),
    Column("current_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    # A deleted automation frees its name; its runs keep pointing at it.
    Index(
        "uq_automations_tenant_name_live",
        "tenant_id",
        "name",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

automation_versions = Table(
    "automation_versions",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("automation_id", ForeignKey("automations.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200)),
    UniqueConstraint("automation_id", "version"),
)

runs = Table(
    "runs",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("automation_id", ForeignKey("automations.id", ondelete="CASCADE"), nullable=False),
    Column("automation_name", String(100), nullable=False),
    uuid_column("version_id", ForeignKey("automation_versions.id"), nullable=False),
    Column("version_number", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("trigger_type", String(32), nullable=False),
    Column("trigger_source_type", String(32), nullable=False),
    Column("trigger_source_id", String(200)),
    Column("trigger_event", JSONType, nullable=False),
    Column("identity", JSONType),
    # The identity's value alone, so the `identity` list filter can use an index.
    Column("identity_value", String(500)),
    Column("contact_id", IdType()),
    Column("concurrency_key", String(500)),
    # True while the run holds one of its concurrency key's slots.
    Column("slot_held", Boolean, nullable=False, server_default=text("false")),
    Column("idempotency_key", String(500)),
    uuid_column("retry_of", ForeignKey("runs.id")),
    # The first run of a retry lineage (a retry's retry still points at the first),
    # and whether this retry may re-send messages the lineage already delivered.
    uuid_column("root_run_id"),
    Column("resend", Boolean, nullable=False, server_default=text("false")),
    # The run whose `trigger_automation` step started this one.
    uuid_column("parent_run_id", ForeignKey("runs.id")),
    Column("dry_run", Boolean, nullable=False, server_default=text("false")),
    Column("error", JSONType),
    Column("event_seq", Integer, nullable=False, server_default=text("0")),
    # Every write of the row adds one: a round that read the run commits only
    # if nobody wrote it since (conveyor.engine.batch).
    Column("version", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("timeout_at", UTCDateTime),
    UniqueConstraint("tenant_id", "automation_id", "idempotency_key"),
    # One index per single-filter list, each ending in the list order
    # (created_at, id), so a page is an index range scan at any table size.
    # Lists show real runs unless asked for dry runs, so the indexes hold real
    # runs only (counting a page's total then never touches the table) and
    # dry runs have their own.
    *_list_indexes(
        ("tenant_created", (), ()),
        ("automation_created", ("automation_id",), ()),
        # One automation's runs in a status: SQLite counts them from the status
        # range, testing automation_id in the index rather than in each row
        # (migration 0014; 8 ms against ~100 for 35,000 failed runs of a tenant).
        ("tenant_status_created", ("status",), ("automation_id",)),
        ("tenant_name_created", ("automation_name",), ()),
        ("tenant_trigger_created", ("trigger_type",), ()),
        ("tenant_source_created", ("trigger_source_type",), ()),
        ("tenant_contact_created", ("contact_id",), ()),
        ("tenant_identity_created", ("identity_value",), ()),
        ("tenant_ckey_created", ("concurrency_key",), ()),
    ),
    Index(
        "ix_runs_dry_created",
        "tenant_id",
        "created_at",
        "id",
        sqlite_where=text("dry_run = 1"),
        postgresql_where=text("dry_run"),
    ),
    # Live streams of run changes read by update time.
    Index("ix_runs_tenant_updated", "tenant_id", "updated_at", "id"),
    # Retention (conveyor.store.prune): finished runs oldest first.
    Index("ix_runs_completed", "completed_at", "id"),
    # Links between runs (retry_of, parent, lineage root): most runs have none, so
    # the indexes hold only the runs that have one (migration 0012). Whole, their
    # NULLs made SQLite's statistics say "useless" and every look-up a scan.
    *(
        Index(
            f"ix_runs_{name}",
            column,
            sqlite_where=text(f"{column} IS NOT NULL"),
            postgresql_where=text(f"{column} IS NOT NULL"),
        )
        for name, column in LINK_INDEXES
    ),
    # The runs a failed run's failure triggers started (lineage, erasure): they
    # name it in trigger_source_id. Only those runs are indexed (migration 0013);
    # queries repeat the condition with its literal, which SQLite needs to use it.
    Index(
        "ix_runs_failure_source",
        "trigger_source_id",
        sqlite_where=text(FAILURE_RUNS),
        postgresql_where=text(FAILURE_RUNS),
    ),
    # Runs waiting for a concurrency slot, oldest first.
    Index("ix_runs_slot_queue", "automation_id", "concurrency_key", "status", "created_at"),
)
# The payload filter (`payload.<path>=<value>`, conveyor.store.run_queries) asks
# PostgreSQL `trigger_event @> {"payload": {...}}`, which this GIN index serves.
# SQLite has no such index (the filter there needs a time window instead).
Index(
    "ix_runs_payload",
    runs.c.trigger_event,
    postgresql_using="gin",
    postgresql_ops={"trigger_event": "jsonb_path_ops"},
).ddl_if(dialect="postgresql")

run_tags = Table(
    "run_tags",
    metadata,
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    tenant_column(),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_run_tags_tenant_tag_created", "tenant_id", "tag", "created_at", "run_id"),
)

concurrency_slots = Table(
    "concurrency_slots",
    metadata,
    # One row per (automation, key): the row lock serialises slot accounting
    # across workers, and `active` counts the runs holding a slot.
    uuid_column(
        "automation_id", ForeignKey("automations.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("key", String(500), primary_key=True),
    tenant_column(),
    Column("active", Integer, nullable=False, server_default=text("0")),
    Column("updated_at", UTCDateTime, nullable=False),
)

bulk_operations = Table(
    "bulk_operations",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    Column("kind", String(32), nullable=False),
    Column("filters", JSONType, nullable=False),
    Column("arguments", JSONType, nullable=False),
    Column("status", String(16), nullable=False),
    Column("matched", Integer, nullable=False, server_default=text("0")),
    Column("done", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("errors", JSONType, nullable=False),
    Column("cursor", String(100)),
    Column("created_by", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    # Records belong to the API key that made them: another key repeating the
    # header gets its own processing and its own scope check.
    uuid_column("key_id", nullable=False),
    Column("key", String(255), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", String(500), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # in_flight | done
    Column("response_status", Integer),
    Column("response_body", Text),
    Column("response_headers", JSONType),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "key_id", "key"),
    Index("ix_idempotency_records_expires", "expires_at"),
)

step_runs = Table(
    "step_runs",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_key", String(64), nullable=False),
    Column("step_type", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("branch_taken", String(64)),
    Column("halted", Boolean, nullable=False, server_default=text("false")),
    Column("output", JSONType),
    Column("output_size", Integer),
    Column("error", JSONType),
    Column("failure", String(16)),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lost_attempts", Integer, nullable=False, server_default=text("0")),
    Column("wake_at", UTCDateTime),
    Column("skip_reason", Text),
    uuid_column("reused_from"),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    UniqueConstraint("run_id", "step_key"),
)

step_attempts = Table(
    "step_attempts",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_key", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("worker_id", String(200)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("error", JSONType),
    UniqueConstraint("run_id", "step_key", "attempt"),
)

run_events = Table(
    "run_events",
    metadata,
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    tenant_column(),
    Column("type", String(64), nullable=False),
    Column("step_key", String(64)),
    Column("data", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    uuid_column(primary_key=True),
    # Null only for the operator's own task (kind `prune`), which spans tenants.
    uuid_column("tenant_id", ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("kind", String(32), nullable=False),
    # A task works on a run, a bulk operation (kind `bulk`) or a schedule.
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE")),
    uuid_column("operation_id", ForeignKey("bulk_operations.id", ondelete="CASCADE")),
    # kind `dry_run`: simulate one slice of a dry run
    uuid_column("dry_run_id"),
    # kind `schedule`: fire the automation's schedule
    uuid_column("automation_id", ForeignKey("automations.id", ondelete="CASCADE")),
    Column("due_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(200)),
    Column("lease_token", IdType()),
    Column("lease_expires_at", UTCDateTime),
    Column("claims", Integer, nullable=False, server_default=text("0")),
    # Claims in a row whose lease ran out (the worker crashed or hung); reset
    # by every claim that ends by giving the task back (poison tasks).
    Column("tries", Integer, nullable=False, server_default=text("0")),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("run_id", "kind"),
    Index("ix_tasks_due", "due_at"),
)

# State of the operator's own jobs, one row each (`prune`: the last prune's time
# and counts, which `conveyor status` shows).
maintenance = Table(
    "maintenance",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("state", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The messaging tables join the same metadata (imported last: they use the helpers above).
from conveyor.store import dryrun_tables, messaging_tables, presence  # noqa: E402, F401
