"""Interleaved A/B: the same benchmark run by two installs of Conveyor, alternately.

Given two Python interpreters, each from a virtualenv with its own
``conveyor`` installed (for example the base commit's worktree and the
change's), it runs ``<python> <script> --db X --json --label A|B`` as
subprocesses, A, B, A, B, ... ``--rounds`` times each per database, collects
the JSON rows and prints, per database, the median of each side for every
process's CPU per run (what a regression is judged on), runs/s and
requests/s, with the relative change B vs A and each side's min to max (the
spread between identical runs). Options it does not know are passed on to
the script, e.g. ``--runs 1000 --clients 8``.

Before each run it waits (up to ``--idle-wait`` seconds) until the rest of the
machine uses less than a quarter of a core: on a shared 2-core host, someone
else's test run moves every figure. The noise rows of the summary show what
was left.

Usage: python bench/ab.py --a ../base/.venv/bin/python --b .venv/bin/python
       [--script bench/http.py] [--rounds 5] [--db sqlite|postgresql|all]
       [--out rows.jsonl] [--idle-wait 300] [script options...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# (JSON key, what the summary calls it, format); the NOISE ones are other work
# on the machine, not Conveyor's, so they get no B-vs-A change.
FIGURES = [
    ("cpu_serve_ms", "CPU ms/run: serve", "{:.3f}"),
    ("cpu_worker_ms", "CPU ms/run: worker", "{:.3f}"),
    ("cpu_database_ms", "CPU ms/run: database", "{:.3f}"),
    ("cpu_load_ms", "CPU ms/run: load generator", "{:.3f}"),
    ("cpu_total_ms", "CPU ms/run: total", "{:.3f}"),
    ("runs_per_s", "runs/s", "{:,.0f}"),
    ("requests_per_s", "requests/s", "{:,.0f}"),
    ("e2e_p99_ms", "e2e p99 ms", "{:,.0f}"),
    ("pg_sessions", "PostgreSQL sessions opened", "{:,.0f}"),
    ("pg_other_db_cpu_ms", "CPU ms/run: other databases (noise)", "{:.3f}"),
    ("other_cpu_ms", "CPU ms/run: other processes (noise)", "{:.3f}"),
]
NOISE = {"pg_other_db_cpu_ms", "other_cpu_ms"}


def busy_cores(seconds: float = 3.0) -> float:
    """How many cores the machine kept busy, on average, over the next ``seconds``."""

    def busy() -> int:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait

    before = busy()
    time.sleep(seconds)
    return (busy() - before) / os.sysconf("SC_CLK_TCK") / seconds


def wait_idle(limit: float) -> str:
    """Wait until the machine is nearly idle, for at most ``limit`` seconds; what was seen."""
    started = time.monotonic()
    while (cores := busy_cores()) >= 0.25 and time.monotonic() - started < limit:
        pass
    waited = time.monotonic() - started
    return f"{cores:.2f} cores busy before the run, after {waited:.0f} s"


def run_once(python: str, script: Path, db: str, label: str, extra: list[str]) -> dict[str, Any]:
    """One benchmark subprocess; its JSON row for ``db``."""
    cmd = [python, str(script), "--db", db, "--json", "--label", label, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"{label} failed ({done.returncode}): {' '.join(cmd)}")
    if done.stderr.strip():
        sys.stderr.write(f"[{label} {db}] {done.stderr}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if len(rows) != 1:
        raise SystemExit(f"expected one JSON row from {' '.join(cmd)}, got {len(rows)}")
    return rows[0]


def fmt(template: str, value: float | None) -> str:
    return "-" if value is None else template.format(value)


def summary(db: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str:
    """The Markdown table comparing the medians of A and B on one database."""
    lines = [
        f"**{db}**: {len(a)} runs of A, {len(b)} of B, interleaved.\n",
        "| figure | A median | B median | B vs A | A min to max | B min to max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, name, template in FIGURES:
        va = [r[key] for r in a if r.get(key) is not None]
        vb = [r[key] for r in b if r.get(key) is not None]
        if not va or not vb:
            continue
        ma, mb = statistics.median(va), statistics.median(vb)
        change = f"{(mb - ma) / ma * 100:+.1f} %" if ma and key not in NOISE else "-"
        lines.append(
            f"| {name} | {fmt(template, ma)} | {fmt(template, mb)} | {change} "
            f"| {fmt(template, min(va))} to {fmt(template, max(va))} "
            f"| {fmt(template, min(vb))} to {fmt(template, max(vb))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--a", required=True, help="python of install A (the base)")
    parser.add_argument("--b", required=True, help="python of install B (the change)")
    parser.add_argument(
        "--script",
        type=Path,
        default=Path(__file__).resolve().with_name("http.py"),
        help="the benchmark (default bench/http.py); it must accept --db, --json, --label",
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side per database")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--out", type=Path, help="also write each row here, as a JSON line")
    parser.add_argument(
        "--idle-wait", type=float, default=300, help="longest wait for an idle machine, s"
    )
    args, extra = parser.parse_known_args()
    kinds = ["sqlite", "postgresql"] if args.db == "all" else [args.db]
    sides = [("A", args.a), ("B", args.b)]
    print(f"A = {args.a}\nB = {args.b}\nscript = {args.script} {' '.join(extra)}\n")
    if args.out:
        args.out.write_text("")
    for db in kinds:
        rows: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
        for i in range(args.rounds):
            for label, python in sides:
                idle = wait_idle(args.idle_wait)
                row = run_once(python, args.script, db, label, extra)
                rows[label].append(row)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                print(
                    f"  {db} round {i + 1}/{args.rounds} {label}: "
                    f"{row['cpu_total_ms']:.3f} CPU ms/run, {row['runs_per_s']:,.0f} runs/s, "
                    f"{row['other_cpu_ms']:.2f} other CPU ms/run ({idle})",
                    file=sys.stderr,
                    flush=True,
                )
        print(summary(db, rows["A"], rows["B"]) + "\n", flush=True)


if __name__ == "__main__":
    main()
