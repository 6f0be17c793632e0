"""One map from an instance's configured engine to its implementation.

Engines are imported only when chosen, so a PostgreSQL user never pays for
pyodbc and the CLI starts fast.
"""

from __future__ import annotations

import importlib

from pitrflow.config import Config
from pitrflow.engines.base import Engine
from pitrflow.errors import ConfigError

# engine name in the config -> "module:class"
ENGINES = {
    "postgresql": "pitrflow.engines.postgres.engine:PostgresEngine",
    "sqlserver": "pitrflow.engines.sqlserver.engine:SqlServerEngine",
}


def engine_for(config: Config, instance: str) -> Engine:
    """The engine of INSTANCE, bound to its configuration."""
    settings = config.instance(instance)
    target = ENGINES.get(settings.engine)
    if target is None:  # config validation already refuses this; kept for direct callers
        raise ConfigError(f"instances.{instance}.engine is {settings.engine!r}",
                          f"supported engines: {', '.join(sorted(ENGINES))}")
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    engine: Engine = cls(config, settings)
    return engine
