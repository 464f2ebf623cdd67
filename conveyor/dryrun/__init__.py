"""Dry runs: simulate an automation per contact and day, with nothing sent or started."""
