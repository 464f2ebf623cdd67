"""Dependencies giving endpoints what ``create_app`` put on the application."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request

from conveyor.clock import Clock
from conveyor.settings import Settings
from conveyor.store.db import Database


# Plain getters are ``async`` so FastAPI calls them on the event loop instead of
# sending each through the threadpool.
async def get_db(request: Request) -> Database:
    """The application's database."""
    db: Database = request.app.state.db
    return db


async def get_settings(request: Request) -> Settings:
    """The application's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_now(request: Request) -> datetime:
    """The time of this request, from the application's clock."""
    clock: Clock = request.app.state.clock
    return clock.now()
