"""The docs say what the code does: diagrams, settings, error codes, scopes, step types, routes."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from conveyor.actions.registry import BUILTIN, registry
from conveyor.domain import errors as domain_errors
from conveyor.domain.errors import ConveyorError
from conveyor.domain.scopes import ALL_SCOPES, UnknownScope
from conveyor.domain.status import RUN_TRANSITIONS, STEP_TRANSITIONS, RunStatus, StepStatus
from conveyor.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    stop = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[: stop.start()] if stop else rest


def _mermaid_edges(section: str) -> set[tuple[str, str]]:
    (block,) = re.findall(r"```mermaid\n(.*?)```", section, flags=re.DOTALL)
    alias = {a: name for name, a in re.findall(r'state "([^"]+)" as (\w+)', block)}
    edges = set()
    for src, dst in re.findall(r"^\s*(\S+) --> (\S+)\s*$", block, flags=re.MULTILINE):
        if "[*]" not in (src, dst):
            edges.add((alias.get(src, src), alias.get(dst, dst)))
    return edges


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def test_run_state_diagram_matches_the_table() -> None:
    drawn = _mermaid_edges(_section(_read("state-machine.md"), "## Run status"))
    table = {(str(a), str(b)) for a, targets in RUN_TRANSITIONS.items() for b in targets}
    assert drawn == table


def test_step_state_diagram_matches_the_table() -> None:
    drawn = _mermaid_edges(_section(_read("state-machine.md"), "## Step status"))
    table = {(str(a), str(b)) for a, targets in STEP_TRANSITIONS.items() for b in targets}
    assert drawn == table


def test_every_terminal_run_status_is_explained() -> None:
    section = _section(_read("state-machine.md"), "### When each terminal status happens")
    explained = {row[0] for row in _table_rows(section)}
    assert explained == {str(s) for s in RunStatus if s.terminal}


def test_every_step_status_is_drawn() -> None:
    section = _section(_read("state-machine.md"), "## Step status")
    nodes = {n for edge in _mermaid_edges(section) for n in edge}
    assert nodes == {str(s) for s in StepStatus}


def _documented_settings() -> dict[str, str]:
    rows = _table_rows(_section(_read("operating.md"), "## Settings"))
    return {row[0].strip("`"): row[1].strip("`") for row in rows}


def test_every_setting_is_documented_with_its_default() -> None:
    documented = _documented_settings()
    fields = Settings.model_fields
    expected = {f"CONVEYOR_{name.upper()}" for name in fields}
    assert set(documented) == expected, "docs/operating.md settings table is out of date"
    for name, info in fields.items():
        shown = documented[f"CONVEYOR_{name.upper()}"]
        if info.default is PydanticUndefined:  # computed at start-up
            assert shown.startswith("<"), name
        elif isinstance(info.default, int | float) and not isinstance(info.default, bool):
            assert float(shown) == info.default, name
        else:
            assert shown == str(info.default), name


def _error_codes() -> set[str]:
    codes = set()
    classes = [ConveyorError, UnknownScope]
    classes += [
        obj
        for obj in vars(domain_errors).values()
        if isinstance(obj, type) and issubclass(obj, ConveyorError)
    ]
    for cls in classes:
        codes.add(cls.code)
    return codes


def test_every_error_code_is_documented() -> None:
    section = _section(_read("api.md"), "## Errors")
    documented = set(re.findall(r"`([a-z_]+)`", section))
    missing = _error_codes() - documented
    assert not missing, f"add these codes to docs/api.md: {sorted(missing)}"


def test_every_scope_is_documented() -> None:
    rows = _table_rows(_section(_read("api.md"), "## Scopes"))
    assert [row[0].strip("`") for row in rows] == list(ALL_SCOPES)


def test_every_step_type_is_documented() -> None:
    rows = _table_rows(_section(_read("concepts.md"), "### Step types"))
    assert {row[0].strip("`") for row in rows} == {
        name for name, action in registry().items() if type(action) in BUILTIN
    }


def _documented_routes() -> set[tuple[str, str]]:
    rows = _table_rows(_section(_read("api.md"), "## Routes"))
    routes = set()
    for row in rows:
        method, path = row[0].strip("`").split(" ", 1)
        routes.add((method, re.sub(r"\{[^}]+\}", "{}", path)))
    return routes


def test_every_route_is_documented() -> None:
    from conveyor.api.app import create_app  # here, so a broken API fails only this test

    app = create_app(Settings(database_url="sqlite://"))
    served = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    documented = _documented_routes()
    assert served - documented == set(), "routes missing from docs/api.md"
    assert documented - served == set(), "docs/api.md lists routes that do not exist"
