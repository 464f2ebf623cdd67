"""The dashboard: server-rendered pages under ``/ui/…`` (see docs/dashboard.md).

Pages call ``services/`` for their data and never the store or ``api/``.
Writes (sign in and out, cancel, retry, replay) are made by the page's own
script through ``/api/v1`` with the session cookie and the CSRF token, so
they pass exactly the checks every API client does.
"""
