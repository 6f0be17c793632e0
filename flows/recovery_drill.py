from __future__ import annotations

from typing import Any

from prefect import flow

from flows.restore_to_point import restore_to_point
from tasks.drill import (
    check_data_quality,
    check_physical_integrity,
    finish_drill,
    prepare_drill,
    run_sqlserver_drill,
)
from tasks.restore import instance_engine


@flow(name="recovery_drill")
def recovery_drill(instance: str, to: str = "random", keep: bool = False,
                   config_path: str | None = None) -> dict[str, Any]:
    """Restore INSTANCE to a scratch instance, check it, measure RTO and data lag, tear down.

    `to` is an ISO 8601 time with offset, `latest`, or `random` (a uniformly
    random point in the recoverable window, recorded in the drill record).
    """
    if instance_engine(instance, config_path) == "sqlserver":
        return run_sqlserver_drill(instance, to, keep, config_path)
    ctx = prepare_drill(instance, to, config_path)
    restored = None
    try:
        restored = restore_to_point(instance=instance, pgdata=str(ctx.scratch),
                                    target_time=ctx.target.time, config_path=config_path,
                                    scratch=True)
        check_physical_integrity(ctx, restored, config_path)
        check_data_quality(ctx, restored, config_path)
    except Exception as exc:  # noqa: BLE001 - recorded, then the drill fails loudly below
        ctx.record.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    return finish_drill(ctx, restored, keep, config_path)
