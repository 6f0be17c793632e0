"""Restore: a pure planner, and an executor that carries a plan out."""
