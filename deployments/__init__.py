"""Turn the pitrflow config into Prefect deployments, limits and alerts.

`generate` writes prefect.yaml, `setup` creates the work pool, the global
concurrency limits and the automations, and `deploy` does both and registers
the deployments; every step can run again with the same result.
"""
