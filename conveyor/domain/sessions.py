"""The browser session's cookie names, shared by the API (which sets them) and the dashboard.

Signing in (``POST /api/v1/session``) sets ``conveyor_token`` (the API key,
HttpOnly) and ``conveyor_csrf`` (a random value scripts read and send back as
``X-CSRF-Token``). Both ``api/`` and ``web/`` read them, so the names live here.
"""

from __future__ import annotations

SESSION_COOKIE = "conveyor_token"
CSRF_COOKIE = "conveyor_csrf"
CSRF_HEADER = "X-CSRF-Token"
