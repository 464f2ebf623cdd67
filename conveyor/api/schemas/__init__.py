"""Wire schemas: the JSON shapes of the HTTP API (snake_case, RFC 3339 UTC times)."""
