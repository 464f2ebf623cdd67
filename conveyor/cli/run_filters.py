"""The run list filters as options, shared by ``runs list`` and ``runs bulk-cancel|bulk-replay``.

Both take the same options (and the same ``CONVEYOR_RUN_*`` variables), so a
list can be checked before the same filters are handed to a bulk operation.
"""

from __future__ import annotations

from typing import Annotated, Any

from conveyor.cli.client import opt
from conveyor.domain.ids import looks_like_id

Status = Annotated[
    list[str] | None,
    opt("--status", "CONVEYOR_RUN_STATUS", "only these statuses (repeatable)"),
]
Automation = Annotated[
    str | None,
    opt("--automation", "CONVEYOR_RUN_AUTOMATION", "only this automation (id or name)"),
]
TriggerType = Annotated[
    str | None, opt("--trigger-type", "CONVEYOR_RUN_TRIGGER_TYPE", "manual, event, ...")
]
TriggerSourceType = Annotated[
    str | None,
    opt("--trigger-source-type", "CONVEYOR_RUN_TRIGGER_SOURCE_TYPE", "user, api_key, ..."),
]
ContactId = Annotated[
    str | None, opt("--contact-id", "CONVEYOR_RUN_CONTACT_ID", "only this contact's runs")
]
Identity = Annotated[
    str | None, opt("--identity", "CONVEYOR_RUN_IDENTITY", "only this identity value")
]
ConcurrencyKey = Annotated[
    str | None, opt("--concurrency-key", "CONVEYOR_RUN_CONCURRENCY_KEY", "only this key")
]
RetryOf = Annotated[
    str | None, opt("--retry-of", "CONVEYOR_RUN_RETRY_OF", "only retries of this run")
]
Tag = Annotated[str | None, opt("--tag", "CONVEYOR_RUN_TAG", "only runs with this tag")]
CreatedAfter = Annotated[
    str | None,
    opt("--created-after", "CONVEYOR_RUN_CREATED_AFTER", "RFC 3339, e.g. 2026-03-01T00:00:00Z"),
]
CreatedBefore = Annotated[
    str | None, opt("--created-before", "CONVEYOR_RUN_CREATED_BEFORE", "RFC 3339")
]


def bulk_filters(automation: str | None, **given: Any) -> dict[str, Any]:
    """The ``filters`` object of a bulk request: the options given, nothing else.

    ``--automation`` is an id or a name, as in ``runs list``: a value shaped
    like a UUID is sent as ``automation_id``, any other as ``automation_name``
    (the rule the server applies to ``/automations/{id_or_name}``).
    """
    filters = {name: value for name, value in given.items() if value not in (None, [])}
    if automation is not None:
        filters["automation_id" if looks_like_id(automation) else "automation_name"] = automation
    return filters
