"""Tables of the messaging half: contacts, events, templates, messages, waits, schedules.

They share ``conveyor.store.tables.metadata``; ``tables`` imports this module, so
importing either gives the whole schema.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from conveyor.store.tables import metadata, tenant_column, uuid_column
from conveyor.store.types import JSONType, UTCDateTime

contacts = Table(
    "contacts",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    Column("external_id", String(255)),
    Column("email", String(320)),
    Column("push_targets", JSONType, nullable=False),
    Column("attributes", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(
        "uq_contacts_tenant_email",
        "tenant_id",
        "email",
        unique=True,
        sqlite_where=text("email IS NOT NULL"),
        postgresql_where=text("email IS NOT NULL"),
    ),
    Index(
        "uq_contacts_tenant_external_id",
        "tenant_id",
        "external_id",
        unique=True,
        sqlite_where=text("external_id IS NOT NULL"),
        postgresql_where=text("external_id IS NOT NULL"),
    ),
    Index("ix_contacts_tenant_created", "tenant_id", "created_at", "id"),
)

events = Table(
    "events",
    metadata,
    # The client's id makes ingestion idempotent: one row per (tenant, id).
    tenant_column(),
    Column("id", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    uuid_column("contact_id", ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("identity", JSONType),
    Column("payload", JSONType, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ix_events_match", "tenant_id", "name", "contact_id", "occurred_at"),
    Index("ix_events_tenant_occurred", "tenant_id", "occurred_at", "id"),
    # Retention (conveyor.store.prune) walks events by arrival, across tenants.
    Index("ix_events_received", "received_at", "tenant_id", "id"),
)

templates = Table(
    "templates",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    Column("name", String(100), nullable=False),
    Column("channel", String(16), nullable=False),  # email | push
    Column("current_version_id", String(36), nullable=False),
    Column("current_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Index(
        "uq_templates_tenant_name_live",
        "tenant_id",
        "name",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

template_versions = Table(
    "template_versions",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("template_id", ForeignKey("templates.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("template_id", "version"),
)

messages = Table(
    "messages",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE")),
    Column("step_key", String(64)),
    Column("channel", String(16), nullable=False),  # email | push
    uuid_column("contact_id", ForeignKey("contacts.id", ondelete="SET NULL")),
    uuid_column("template_id"),
    uuid_column("template_version_id"),
    # Written before the provider call; travels as Message-ID / Idempotency-Key.
    Column("idempotency_key", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # sending | sent | failed
    Column("provider", String(32), nullable=False),
    Column("recipient", String(1000), nullable=False),
    Column("subject", Text),  # email subject or push title
    Column("content", JSONType, nullable=False),  # the rendered message
    Column("provider_message_id", String(500)),
    Column("error", JSONType),
    Column("last_event", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "idempotency_key"),
    Index("ix_messages_tenant_created", "tenant_id", "created_at", "id"),
    Index("ix_messages_run", "run_id", "step_key"),
)

waits = Table(
    "waits",
    metadata,
    uuid_column(primary_key=True),
    tenant_column(),
    uuid_column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("step_key", String(64), nullable=False),
    Column("event_name", String(200), nullable=False),
    uuid_column("contact_id"),
    Column("identity_value", String(500)),
    Column("match", Text),
    # waiting | received | timed_out | cancelled; one compare-and-set on it decides
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("lookback_from", UTCDateTime, nullable=False),
    Column("timeout_at", UTCDateTime),
    Column("resumed_at", UTCDateTime),
    Column("timed_out_at", UTCDateTime),
    Column("outcome_branch", String(16)),
    Column("resumed_by_event_id", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("run_id", "step_key"),
    Index("ix_waits_open", "tenant_id", "event_name", "contact_id", "status"),
)

schedules = Table(
    "schedules",
    metadata,
    # One row per scheduled automation: the next firing is stored, not derived,
    # so a restart neither skips nor repeats one.
    uuid_column(
        "automation_id", ForeignKey("automations.id", ondelete="CASCADE"), primary_key=True
    ),
    tenant_column(),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("next_fire_at", UTCDateTime, nullable=False),
    Column("last_fired_at", UTCDateTime),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_schedules_next", "enabled", "next_fire_at"),
)

channel_settings = Table(
    "channel_settings",
    metadata,
    uuid_column("tenant_id", ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("email", JSONType, nullable=False),
    Column("push", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
