"""The name and summary of every operation of the API, for the OpenAPI document.

One table, so operation ids are chosen once, read as a list, and a route that
is missing from it fails the OpenAPI test rather than getting FastAPI's
generated ``list_runs_api_v1_runs_get``. Ids are the lowerCamelCase verbs a
generated client exposes (``listRuns``, ``retryRun``).
"""

from __future__ import annotations

from typing import NamedTuple


class Operation(NamedTuple):
    """How one operation is named in the OpenAPI document."""

    operation_id: str
    summary: str


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation("getHealth", "Liveness: the process answers"),
    ("GET", "/readyz"): Operation("getReadiness", "Readiness: the database answers"),
    ("POST", "/api/v1/session"): Operation("createSession", "Sign in with an API key (cookie)"),
    ("DELETE", "/api/v1/session"): Operation("deleteSession", "Sign out (clear the cookie)"),
    ("GET", "/api/v1/automations"): Operation("listAutomations", "List automations"),
    ("POST", "/api/v1/automations"): Operation("createAutomation", "Create an automation"),
    ("GET", "/api/v1/automations/{automation_id}"): Operation(
        "getAutomation", "Get an automation and its current definition"
    ),
    ("PUT", "/api/v1/automations/{automation_id}"): Operation(
        "updateAutomation", "Save a new version of an automation"
    ),
    ("DELETE", "/api/v1/automations/{automation_id}"): Operation(
        "deleteAutomation", "Delete an automation"
    ),
    ("GET", "/api/v1/automations/{automation_id}/versions"): Operation(
        "listAutomationVersions", "List an automation's versions"
    ),
    ("POST", "/api/v1/automations/{automation_id}/trigger"): Operation(
        "triggerAutomation", "Start a run (or a dry run) of an automation"
    ),
    ("POST", "/api/v1/automations/{automation_id}/trigger/batch"): Operation(
        "triggerAutomationBatch", "Start up to 1,000 runs of an automation"
    ),
    ("POST", "/api/v1/runs/bulk/cancel"): Operation(
        "bulkCancelRuns", "Cancel every run matching filters"
    ),
    ("POST", "/api/v1/runs/bulk/replay"): Operation(
        "bulkReplayRuns", "Replay every run matching filters"
    ),
    ("GET", "/api/v1/bulk-operations/{operation_id}"): Operation(
        "getBulkOperation", "Get a bulk operation's progress"
    ),
    ("GET", "/api/v1/runs/stream"): Operation(
        "streamRuns", "Stream changes of matching runs (server-sent events)"
    ),
    ("GET", "/api/v1/runs/{run_id}/events"): Operation(
        "listRunEvents", "Get a run's history (JSON page or live stream)"
    ),
    ("GET", "/api/v1/runs"): Operation("listRuns", "List runs"),
    ("GET", "/api/v1/automations/{automation_id}/runs"): Operation(
        "listAutomationRuns", "List one automation's runs"
    ),
    ("GET", "/api/v1/runs/{run_id}"): Operation("getRun", "Get a run with its steps"),
    ("GET", "/api/v1/runs/{run_id}/steps"): Operation(
        "listRunSteps", "List a run's steps with their counts"
    ),
    ("GET", "/api/v1/runs/{run_id}/steps/{step_key}/output"): Operation(
        "getStepOutput", "Get one step's full output"
    ),
    ("POST", "/api/v1/runs/{run_id}/cancel"): Operation("cancelRun", "Cancel a run"),
    ("POST", "/api/v1/runs/{run_id}/retry"): Operation("retryRun", "Retry a failed run"),
    ("POST", "/api/v1/runs/{run_id}/replay"): Operation(
        "replayRun", "Replay a finished run as a new run"
    ),
    ("GET", "/api/v1/keys"): Operation("listKeys", "List API keys"),
    ("POST", "/api/v1/keys"): Operation("createKey", "Create an API key"),
    ("DELETE", "/api/v1/keys/{key_id}"): Operation("revokeKey", "Revoke an API key"),
    ("GET", "/api/v1/audit"): Operation("listAudit", "List the audit trail"),
    ("GET", "/api/v1/contacts"): Operation("listContacts", "List contacts"),
    ("POST", "/api/v1/contacts"): Operation("upsertContact", "Create or update a contact"),
    ("GET", "/api/v1/contacts/{contact_id}"): Operation("getContact", "Get a contact"),
    ("PUT", "/api/v1/contacts/{contact_id}"): Operation("replaceContact", "Replace a contact"),
    ("PATCH", "/api/v1/contacts/{contact_id}"): Operation(
        "patchContact", "Change some fields of a contact"
    ),
    ("DELETE", "/api/v1/contacts/{contact_id}"): Operation(
        "deleteContact", "Delete a contact (with erase=true, erase the person everywhere)"
    ),
    ("POST", "/api/v1/events"): Operation("ingestEvents", "Send events (one or a batch)"),
    ("GET", "/api/v1/events"): Operation("listEvents", "List received events"),
    ("GET", "/api/v1/events/{event_id}"): Operation("getEvent", "Get a received event"),
    ("GET", "/api/v1/templates"): Operation("listTemplates", "List message templates"),
    ("PUT", "/api/v1/templates/{name}"): Operation(
        "putTemplate", "Create a template or save its new version"
    ),
    ("GET", "/api/v1/templates/{name}"): Operation(
        "getTemplate", "Get a template's current version"
    ),
    ("DELETE", "/api/v1/templates/{name}"): Operation("deleteTemplate", "Delete a template"),
    ("GET", "/api/v1/templates/{name}/versions"): Operation(
        "listTemplateVersions", "List a template's versions"
    ),
    ("GET", "/api/v1/messages"): Operation("listMessages", "List sent messages"),
    ("GET", "/api/v1/messages/{message_id}"): Operation(
        "getMessage", "Get a message with its rendered content"
    ),
    ("GET", "/api/v1/settings/channels"): Operation(
        "getChannelSettings", "Get the email and push channel settings"
    ),
    ("PUT", "/api/v1/settings/channels"): Operation(
        "putChannelSettings", "Replace the email and push channel settings"
    ),
    ("GET", "/api/v1/dry-run-results"): Operation("listDryRunResults", "List dry-run results"),
    ("GET", "/api/v1/dry-run-results/{result_id}"): Operation(
        "getDryRunResult", "Get one dry-run result (a simulated run)"
    ),
    ("DELETE", "/api/v1/dry-run-results/{result_id}"): Operation(
        "deleteDryRunResult", "Delete one dry-run result"
    ),
    ("GET", "/api/v1/dry-runs/{dry_run_id}"): Operation(
        "getDryRun", "Get a dry run's progress and summary"
    ),
    ("POST", "/api/v1/dry-runs/{dry_run_id}/cancel"): Operation(
        "cancelDryRun", "Cancel a dry run in progress"
    ),
}
