"""Conveyor: a self-hosted automation engine with a first-class Runs API."""

__version__ = "0.1.0"
