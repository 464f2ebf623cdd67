"""Sample the W1 worker with py-spy: where a ``conveyor worker`` spends its CPU.

Runs bench/engine.py's ``--json`` scenario (one worker, W1 runs triggered 100
per transaction while it works) with ``py-spy record --gil`` attached to the
worker (common.py_spy), writes py-spy's raw (collapsed) stacks to ``--out`` and
prints the worker's CPU ms per run and the lines with the most samples of
their own. Compare two installs by running it under each (``PYTHONPATH`` to
an export, as bench/ab.py's sides) and diffing the outputs.

py-spy is not a dependency: ``.venv/bin/pip install py-spy``.

``--offered R`` triggers the runs at R per second, each 10 ms's runs as one
group (as ``conveyor serve`` writes triggers), for the worker at moderate load,
where per-batch costs dominate; without it they are triggered as fast as they
go, 100 per transaction, and the worker drains them in large batches.

Usage: python bench/profile_w1.py [--db sqlite|postgresql] [--runs 16000]
       [--offered 400] [--rate 1000] [--out w1.stacks] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

from common import cpu_seconds, fresh_database, py_spy, start_workers, stop_py_spy, stop_workers
from engine import DEFINITION, trigger_all, wait_done

from conveyor.testing.factories import make_automation, make_tenant


def top_lines(stacks: Path, count: int) -> list[tuple[float, str]]:
    """The ``count`` frames (function and line) with the most samples of their own, as shares."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        if not line.strip():
            continue
        frames, n = line.rsplit(" ", 1)
        own[frames.split(";")[-1]] += int(n)
        total += int(n)
    return [(n / max(total, 1), frame) for frame, n in own.most_common(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=16000)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--offered", type=float, help="runs per second triggered (grouped)")
    parser.add_argument("--out", type=Path, default=Path("w1.stacks"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        db = fresh_database(args.db, tmp, "conveyor_bench_w1")
        tenant = make_tenant(db, "bench")
        automation = make_automation(db, tenant, DEFINITION)
        (proc,) = start_workers(db, 1, tmp)
        sampler = py_spy(proc.pid, args.out, args.rate)
        before = cpu_seconds(proc.pid)
        trigger_all(db, tenant, automation, args.runs, args.offered, grouped=bool(args.offered))
        wait_done(db, args.runs)
        used = cpu_seconds(proc.pid) - before
        stop_py_spy(sampler)
        stop_workers([proc])
        db.dispose()
    load = f"{args.offered:.0f} runs/s offered" if args.offered else "as fast as triggered"
    print(f"worker CPU ms/run: {used * 1000 / args.runs:.3f} ({args.db}, {args.runs} runs, {load})")
    for share, frame in top_lines(args.out, args.top):
        print(f"{share * 100:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
