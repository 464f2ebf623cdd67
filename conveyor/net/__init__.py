"""The one way out: the egress policy applied to connections, and the capped HTTP client."""
