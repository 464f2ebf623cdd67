"""A hostile server against the outbound client, in a process of its own so its memory is its own.

A 250 KB gzip body that inflates to 256 MiB ends as ``response_too_large``
while the process's peak memory (``VmHWM``) grows by less than
``GROWTH_BOUND_MB`` (documented in docs/operating.md): the body is inflated a
piece at a time under the cap, never whole. A server trickling a byte at a
time is cut at the call's total deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.http_server import HitServer, gzip_bomb, running_server

GROWTH_BOUND_MB = 32
BOMB_MIB = 256

# Runs in a fresh interpreter: fetch one URL with the settings' client, report
# the outcome and the peak resident memory before and after.
SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from conveyor.net.http import EgressClient
from conveyor.settings import Settings

def peak_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

async def main(url):
    client = EgressClient.from_settings(Settings(egress_allow="127.0.0.1/32", http_timeout=2))
    before = peak_kb()
    try:
        fetched = await client.fetch("GET", url)
        outcome = f"status {fetched.status_code}, {len(fetched.content)} bytes"
    except Exception as exc:
        outcome = type(exc).__name__
    finally:
        await client.aclose()
    print(json.dumps({"outcome": outcome, "before_kb": before, "after_kb": peak_kb()}))

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
def http_server() -> Iterator[HitServer]:
    """A local server with a bomb ready (made before the client asks, not while it waits)."""
    gzip_bomb(BOMB_MIB)
    with running_server() as server:
        yield server


def _fetch(url: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_gzip_bomb_is_cut_at_the_cap_in_bounded_memory(http_server: HitServer) -> None:
    assert len(gzip_bomb(BOMB_MIB)) < 300_000
    result = _fetch(f"{http_server.url}/bomb/{BOMB_MIB}/x")
    assert result["outcome"] == "ResponseTooLarge", result
    growth_mb = (int(str(result["after_kb"])) - int(str(result["before_kb"]))) / 1024
    assert growth_mb < GROWTH_BOUND_MB, result


def test_a_trickling_server_is_cut_at_the_total_deadline(http_server: HitServer) -> None:
    # One byte every half second: no single read waits long, the whole call does.
    result = _fetch(f"{http_server.url}/trickle/0.5/x")
    assert result["outcome"] == "DeadlinePassed", result
