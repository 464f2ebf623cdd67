"""Keep the garbage collector's full passes short in long-running processes.

A full collection walks every tracked object. After start-up a server holds
hundreds of thousands of them (SQLAlchemy, Pydantic and FastAPI internals,
compiled templates) that live for the whole process, so every full pass,
which requests allocating a lot (a page of 1,000 runs) trigger every few
requests, stalled one request by 100-150 ms: the lists' p99 (bench/RESULTS.md).
``gc.freeze()`` moves what exists at start-up out of the collector's view.
Only the CLI's long-running commands call this, never tests or library users.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then leave every object alive now out of later collections."""
    gc.collect()
    gc.freeze()
