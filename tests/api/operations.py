"""The operations of the API, walked from the application (so new routes are included)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute, iter_route_contexts

from conveyor.api.app import ROUTERS, create_app
from conveyor.api.routing import HygienicRoute
from conveyor.settings import Settings

__all__ = ["LISTS", "OPERATIONS", "Op", "filled"]

_PLACEHOLDER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Op:
    """One operation of the API: a method on a path, with the query it declares."""

    method: str
    path: str
    route: APIRoute

    @property
    def query(self) -> list[Any]:
        """The route's declared query fields (sub-dependencies included)."""
        return [
            f
            for f in get_flat_params(self.route.dependant)
            if isinstance(f.field_info, params.Query)
        ]

    @property
    def names(self) -> set[str]:
        """The query parameter names it declares."""
        return {f.alias for f in self.query}

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _operations() -> list[Op]:
    app = create_app(Settings(database_url="sqlite://"))
    # Conveyor's own operations only: seed 002's adapter also lives under /api/v1
    # (conveyor.api.compat), answers in its document's shapes, and has its own tests.
    own = {
        (route.path, method)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    ops = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        if not path.startswith("/api/v1"):
            continue
        assert isinstance(route, HygienicRoute), path
        ops += [Op(m, path, route) for m in sorted(context.methods or ()) if (path, m) in own]
    return ops


OPERATIONS = _operations()
LISTS = [op for op in OPERATIONS if op.method == "GET" and "cursor" in op.names]


def filled(path: str, values: dict[str, str] | None = None) -> str:
    """``path`` with its placeholders filled from ``values`` (`x` for the others)."""
    return _PLACEHOLDER.sub(lambda m: (values or {}).get(m.group(1), "x"), path)
