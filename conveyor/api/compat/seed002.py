"""Seed 002's API (see docs/seeds.md): not built yet."""

from __future__ import annotations

from fastapi import APIRouter

TITLE = "seed 002"

router = APIRouter()
