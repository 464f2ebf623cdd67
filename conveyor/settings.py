"""Settings, read from ``CONVEYOR_*`` environment variables.

Built by ``create_app()`` and the CLI, never at import time.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor import metrics
from conveyor.crypto import MIN_KEY_LENGTH, Vault
from conveyor.domain.egress import EgressPolicy, IPNetwork, Rules
from conveyor.domain.origins import origin_of
from conveyor.domain.sandbox import Limits, configure
from conveyor.domain.senders import SenderDomains
from conveyor.store.db import Database


def default_worker_id() -> str:
    """A worker name that tells a person which process holds a lease."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Every knob Conveyor has; each is ``CONVEYOR_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    database_url: str = "sqlite:///conveyor.db"
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # Runs one POST /events may start; events past it are rejected (too_many_runs).
    max_runs_per_request: int = Field(2000, ge=1, le=100_000)
    # Rate limits (conveyor.api.ratelimit): per API key, with its burst; and
    # failed authentications per client address.
    rate_limit: str = "50/second"
    rate_limit_burst: int = Field(100, ge=1)
    auth_failure_limit: str = "20/second"
    # Seconds a key's principal is reused without a database read (per process;
    # conveyor.services.principals). 0: every request reads it.
    auth_cache_seconds: float = Field(5.0, ge=0, le=300)
    # Where browsers reach the server (`https://conveyor.example.com`): the origin a
    # cookie-authenticated write must come from (unset: the request's own scheme and host).
    public_url: str | None = None
    # Peers whose X-Forwarded-For/-Proto/-Host are believed (comma-separated IPs or
    # CIDRs); the default is uvicorn's, loopback. Empty: none.
    trusted_proxies: str = "127.0.0.1,::1"
    # Live streams (SSE) open at once, per API key and per tenant.
    max_streams_per_key: int = Field(10, ge=1)
    max_streams_per_tenant: int = Field(50, ge=1)
    worker_id: str = Field(default_factory=default_worker_id)
    worker_batch_size: int = Field(64, ge=1, le=1000)
    # The shortest time between two claims of a worker that found less than a
    # full batch, so that under a steady trickle the work committed meanwhile is
    # claimed in one batch rather than a few at a time; work after a quiet spell
    # is claimed at once (bench/RESULTS.md, "The trigger's fast path, a claim
    # interval": 25 ms took a quarter off the worker's CPU per run at 400 runs/s
    # for 4 ms more p99 latency; "Triggers written together": 10 ms a sixth).
    worker_claim_linger: float = Field(0.025, ge=0, le=1.0)
    worker_concurrency: int = Field(64, ge=1, le=10_000)
    lease_seconds: float = Field(30.0, gt=0)
    # A task whose lease ran out this many times in a row (its worker crashed
    # or hung each time) is set aside: its run fails with `poisoned`.
    poison_after: int = Field(3, ge=1, le=100)
    # Slots of one worker a tenant may hold while another tenant has work due
    # (unset: half of worker_concurrency); with nobody else due, it may use all.
    tenant_concurrency: int | None = Field(None, ge=1, le=10_000)
    poll_interval: float = Field(0.5, gt=0, description="idle poll when no wake-up arrives")
    # PostgreSQL sessions of `serve` and `worker` (not of migrate and other
    # maintenance): a statement or an idle open transaction longer than this ends.
    pg_statement_timeout: float = Field(30.0, gt=0)
    pg_idle_tx_timeout: float = Field(60.0, gt=0)
    # PostgreSQL connections each process of `serve`, `worker` and `dev` may hold:
    # the pool, opened as needed and then kept, and how many more it may open at
    # a peak, each closed when returned. No overflow by default: under a steady
    # load above the pool, overflow connections are opened and closed again for
    # every few requests, and a new session costs PostgreSQL a fork and a cold
    # catalogue cache (bench/RESULTS.md, "Triggers written together, pools that
    # keep their sessions, a lingering worker").
    # docs/operating.md sizes them against max_connections.
    db_pool_size: int = Field(30, ge=1, le=1000)
    db_max_overflow: int = Field(0, ge=0, le=1000)
    # Server processes of `conveyor serve` (PostgreSQL only; conveyor.cli.serving).
    serve_processes: int = Field(1, ge=1, le=256)
    max_output_bytes: int = Field(1_048_576, ge=1024)
    inline_output_bytes: int = Field(65_536, ge=1024)
    # Outbound calls (conveyor.net.egress): a total deadline over connect, send and
    # the whole body (a step's own `timeout` may raise it up to http_max_timeout),
    # and a cap on a response's bytes after decompression (None: max_output_bytes).
    http_timeout: float = Field(30.0, gt=0)
    http_max_timeout: float = Field(300.0, gt=0)
    http_max_response_bytes: int | None = Field(None, ge=1024)
    # The egress policy (conveyor.domain.egress): comma-separated CIDRs and host
    # names. Unset allow is the default (nothing private; `conveyor dev` allows
    # loopback); set, even to empty, it replaces the default everywhere.
    egress_allow: str | None = None
    egress_deny: str | None = None
    # Apprise schemes tenants' push targets may use (comma-separated); none by default.
    apprise_schemes: str | None = None
    # Bounds of user expressions and templates (conveyor.domain.sandbox): CPU
    # seconds for one step attempt's evaluation, characters of one source string.
    expression_timeout: float = Field(1.0, gt=0, le=60)
    expression_max_source: int = Field(16_384, ge=256, le=1_048_576)
    # Cron firings missed while no worker ran: once | all | skip (see docs/operating.md).
    schedule_missed: Literal["once", "all", "skip"] = "once"
    schedule_grace_seconds: float = Field(60.0, ge=0)
    # Longest date range a dry run may simulate, in days.
    dry_run_max_days: int = Field(366, ge=1)
    # Dry-run days one worker simulates at once (each is CPU-bound Python, so more
    # than a couple per process only contend for the GIL; other workers take the rest).
    worker_dry_run_days: int = Field(1, ge=1, le=64)
    log_level: str = "INFO"
    # Logs, health and worker presence (conveyor.logs, conveyor.engine.presence).
    # log_format unset: console for `dev` or a terminal, JSON for serve/worker otherwise.
    log_format: Literal["json", "console"] | None = None
    access_log: bool = True
    # A worker whose heartbeat row is older than this is dead (`conveyor status`);
    # workers beat at least three times within it.
    worker_dead_seconds: float = Field(60.0, gt=0)
    dev_key_file: str = ".conveyor-dev-key"
    dev_secret_key_file: str = ".conveyor-secret-key"
    # Channel defaults; a tenant overrides them with PUT /api/v1/settings/channels.
    email_provider: Literal["outbox", "smtp"] = "outbox"
    email_from: str = "Conveyor <conveyor@localhost>"
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    # AUTH to a tenant's own SMTP server without STARTTLS sends its password in
    # clear: refused unless this is true (the operator's relay is used as configured).
    smtp_allow_plaintext_auth: bool = False
    # Domains tenants may send from through the operator's SMTP relay
    # (comma-separated, `*.domain` for names under it); none when unset, so a
    # tenant on the relay sends as email_from. `conveyor tenants set-from-domains`
    # gives a tenant its own list.
    email_from_domains: str | None = None
    push_provider: Literal["outbox", "webhook", "apprise"] = "outbox"
    push_webhook_url: str | None = None
    # Secrets at rest (conveyor.crypto): the key new secrets are sealed with, and
    # older keys (comma-separated) whose sealed values still open until rotated.
    secret_key: SecretStr | None = None
    secret_keys_old: SecretStr | None = None
    # Retention (conveyor.services.retention; docs/operating.md#retention): days a
    # finished row is kept; 0 keeps it forever. Runs go by lineage, when every run
    # of it is past its own retention; events also bound de-duplication and dry runs.
    retention_runs_days: int = Field(30, ge=0)
    retention_failed_runs_days: int = Field(90, ge=0)
    retention_events_days: int = Field(90, ge=0)
    retention_dry_runs_days: int = Field(30, ge=0)
    retention_bulk_days: int = Field(30, ge=0)
    retention_revoked_keys_days: int = Field(90, ge=0)
    # Seconds between the workers' automatic prunes (one queued `prune` task); 0: none.
    retention_prune_interval: float = Field(3600.0, ge=0)
    # Rows (for runs: lineages) removed per transaction, so no lock is held long.
    retention_batch_size: int = Field(500, ge=1, le=10_000)
    # Metrics (conveyor.metrics, docs/operating.md "Metrics"): the bearer token
    # `/metrics` asks for (unset: loopback clients only); an `automation` label
    # on the run metrics (tenant-chosen names: off by default); the worker's
    # own `/metrics` port (unset: none) and the address it binds.
    metrics_token: SecretStr | None = None
    metrics_automation_label: bool = False
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    @property
    def tenant_slots(self) -> int:
        """The slots a tenant may hold while others have work due (see ``tenant_concurrency``)."""
        if self.tenant_concurrency is not None:
            return self.tenant_concurrency
        return max(1, self.worker_concurrency // 2)

    def service_database(self) -> Database:
        """The database of a long-running service (serve, worker): sessions with timeouts."""
        return Database(
            self.database_url,
            pool_size=self.db_pool_size,
            max_overflow=self.db_max_overflow,
            session_timeouts=(self.pg_statement_timeout, self.pg_idle_tx_timeout),
        )

    def evaluator_limits(self) -> Limits:
        """The bounded evaluator's limits: a value may be as large as a step's output."""
        return Limits(
            timeout=self.expression_timeout,
            max_value=self.max_output_bytes,
            max_alloc=8 * self.max_output_bytes,
            max_source=self.expression_max_source,
        )

    def apply_limits(self) -> None:
        """Make these limits the process's defaults (every server and worker start does)."""
        configure(self.evaluator_limits())
        metrics.configure(automation_label=self.metrics_automation_label)

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse  # a check of the text only

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate such as `50/second`: {value!r}") from exc
        return value

    def vault(self) -> Vault:
        """The vault of these settings' secret keys (built once per set of keys)."""
        current = self.secret_key.get_secret_value() if self.secret_key else None
        old = self.secret_keys_old.get_secret_value() if self.secret_keys_old else None
        return _vault(current, old)

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_KEY_LENGTH} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @field_validator("secret_keys_old")
    @classmethod
    def _old_secret_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if any(len(k) < MIN_KEY_LENGTH for k in _old_keys(value)):
            raise ValueError(f"each old key must be at least {MIN_KEY_LENGTH} characters")
        return value

    def egress_policy(self) -> EgressPolicy:
        """The egress policy these settings describe (checked when the settings are built)."""
        return EgressPolicy.build(self.egress_allow, self.egress_deny, self.apprise_schemes)

    def response_cap(self) -> int:
        """Most bytes of one outbound response, after decompression."""
        return self.http_max_response_bytes or self.max_output_bytes

    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        """The networks of ``trusted_proxies`` (checked when the settings are built)."""
        return _networks(self.trusted_proxies)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        _networks(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # set to empty: unset
        if origin_of(value) is None:
            raise ValueError(f"not an http:// or https:// URL with a host: {value!r}")
        return value

    @field_validator("egress_allow", "egress_deny")
    @classmethod
    def _rules(cls, value: str | None) -> str | None:
        Rules.parse(value)  # a bad entry stops the start-up, not the first call
        return value

    @field_validator("email_from_domains")
    @classmethod
    def _from_domains(cls, value: str | None) -> str | None:
        SenderDomains.parse(value)  # a bad entry stops the start-up, not the first send
        return value

    @field_validator("apprise_schemes")
    @classmethod
    def _schemes(cls, value: str | None) -> str | None:
        for scheme in (value or "").split(","):
            name = scheme.strip().removesuffix("://")
            if name and not (name[0].isalpha() and all(c.isalnum() or c in "+-." for c in name)):
                raise ValueError(f"{scheme.strip()!r} is not a URL scheme (write `json,ntfy`)")
        return value

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        # psycopg 3 is the one PostgreSQL driver we ship; accept the plain scheme.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value


def _networks(text: str) -> tuple[IPNetwork, ...]:
    found = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            found.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
    return tuple(found)


def _old_keys(value: SecretStr | None) -> list[str]:
    text = value.get_secret_value() if value is not None else ""
    return [k.strip() for k in text.split(",") if k.strip()]


@functools.lru_cache(maxsize=8)
def _vault(current: str | None, old: str | None) -> Vault:
    return Vault(current, _old_keys(SecretStr(old) if old else None))
