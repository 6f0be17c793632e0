"""Prefect tasks: one core call each, with retries, timeouts and artifacts."""
