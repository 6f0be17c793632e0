"""Turn the pitrflow config into Prefect deployments, limits and alerts.

`desired` derives the deployments from the config (`specs` holds the schedules),
`register` applies them through Prefect's API, `generate` writes them as
prefect.yaml, `setup` creates the work pool and its restores queue, the global
concurrency limits, the block types and the fleet's automations (`alerts`), and
`deploy` (`pitr deploy`) does it all; every step can run again with the same result.
"""
