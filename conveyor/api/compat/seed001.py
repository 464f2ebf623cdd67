"""Seed 001's API (see docs/seeds.md): not built yet."""

from __future__ import annotations

from fastapi import APIRouter

TITLE = "seed 001"

router = APIRouter()
