"""Channels: the providers that deliver emails (smtp, outbox) and push notifications
(webhook, apprise, outbox), and their per-tenant configuration."""
