"""PostgreSQL restores: a pure planner, an executor, fetching and chain rebuilding."""
