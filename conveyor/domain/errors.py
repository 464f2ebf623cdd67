"""Domain errors: one base class with a stable ``code``.

HTTP status mapping lives in ``conveyor.api.errors``; nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Something went wrong."""

    code = "error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or (self.__doc__ or self.code).strip()
        self.extra = extra
        super().__init__(self.detail)


class NotFound(ConveyorError):
    """The object was not found."""

    code = "not_found"


class AutomationNotFound(NotFound):
    """The automation was not found."""

    code = "automation_not_found"


class RunNotFound(NotFound):
    """The run was not found."""

    code = "run_not_found"


class StepNotFound(NotFound):
    """The step was not found in this run."""

    code = "step_not_found"


class TenantNotFound(NotFound):
    """The tenant was not found."""

    code = "tenant_not_found"


class ApiKeyNotFound(NotFound):
    """The API key was not found."""

    code = "api_key_not_found"


class Conflict(ConveyorError):
    """The request conflicts with the current state."""

    code = "conflict"


class AutomationNameTaken(Conflict):
    """An automation with this name already exists."""

    code = "automation_name_taken"


class TenantNameTaken(Conflict):
    """A tenant with this name already exists."""

    code = "tenant_name_taken"


class AutomationDisabled(Conflict):
    """The automation is disabled."""

    code = "automation_disabled"


class InvalidDefinition(ConveyorError):
    """The automation definition is invalid."""

    code = "invalid_definition"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        super().__init__(f"invalid automation definition: {msgs}")


class ExpressionError(ConveyorError):
    """An expression or template could not be compiled or evaluated."""

    code = "expression_error"


class ExpressionTimeout(ExpressionError):
    """Evaluating the expressions and templates of one step attempt took too long."""

    code = "expression_timeout"


class ExpressionTooLarge(ExpressionError):
    """An expression or template (or a value it built) is over the size limit."""

    code = "expression_too_large"


class LeaseLost(ConveyorError):
    """This worker no longer holds the lease on the task; its result is discarded."""

    code = "lease_lost"


class Unauthenticated(ConveyorError):
    """A valid API key is required."""

    code = "unauthenticated"


class Forbidden(ConveyorError):
    """The API key lacks the scope this operation needs."""

    code = "forbidden"


class EgressDenied(ConveyorError):
    """An address this server does not connect to (the egress policy)."""

    code = "egress_denied"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        )


class InvalidCursor(ConveyorError):
    """The cursor is not one this server gave out; pass a page's `next_cursor` unchanged."""

    code = "invalid_cursor"


class MalformedJSON(ConveyorError):
    """The request body is not acceptable JSON."""

    code = "malformed_json"
