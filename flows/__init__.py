"""Prefect flows: short stories of named tasks."""
