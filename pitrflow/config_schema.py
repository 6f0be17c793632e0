"""Checking one TOML table against a declarative schema: the keys, their types, defaults.

A schema maps each key to (type, default); REQUIRED as the default makes a key
mandatory.  Every mistake is one line naming the dotted key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pitrflow.errors import ConfigError

REQUIRED = object()


def check_table(
    raw: Any, schema: dict[str, tuple[type, Any]], dotted: str, source: Path
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{dotted} in {source} must be a table", f"write it as [{dotted}]")
    for key in raw:
        if key not in schema:
            allowed = ", ".join(sorted(schema))
            raise ConfigError(
                f"unknown key {dotted}.{key} in {source}", f"known keys: {allowed}"
            )
    values: dict[str, Any] = {}
    for key, (kind, default) in schema.items():
        if key not in raw:
            if default is REQUIRED:
                raise ConfigError(
                    f"missing key {dotted}.{key} in {source}",
                    f"add {key} = ... to [{dotted}]",
                )
            values[key] = default
            continue
        value = raw[key]
        # bool is a subclass of int: refuse `port = true` explicitly.
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong:
            raise ConfigError(
                f"{dotted}.{key} in {source} must be {kind.__name__}, got {value!r}",
                f"fix the value of {key} in [{dotted}]",
            )
        values[key] = value
    return values
