"""Helpers for tests, shipped so users can test their own automations."""
