from __future__ import annotations

from typing import Any

from prefect import flow

from flows.restore_to_point import restore_to_point
from pitrflow.errors import describe_error
from tasks.drill import check_data_quality, check_physical_integrity, finish_drill, prepare_drill


@flow(name="recovery_drill")
def recovery_drill(instance: str, to: str = "random", keep: bool = False,
                   config_path: str | None = None) -> dict[str, Any]:
    """Restore INSTANCE to a scratch instance, check it, measure RTO and data lag, tear down.

    `to` is an ISO 8601 time with offset, `latest`, or `random` (a uniformly
    random point in the recoverable window, recorded in the drill record).
    """
    session = prepare_drill(instance, to, config_path)
    restored = None
    try:
        restored = restore_to_point(instance=instance, target_time=session.target.time,
                                    config_path=config_path,
                                    **session.destination.flow_parameters())
    except Exception as exc:  # noqa: BLE001 - recorded; the drill then fails loudly
        session.record_error(f"restore failed: {describe_error(exc)}")
    if restored is not None:
        try:
            check_physical_integrity(session, restored)
            check_data_quality(session, restored)
        except Exception as exc:  # noqa: BLE001 - recorded; the drill then fails loudly
            session.record_error(describe_error(exc))
    return finish_drill(session, restored, keep)
