"""Progress: counted from many threads, reported to sinks, logged, finished at exactly 100%."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from pitrflow.progress import Progress, ProgressState, progress_sink, terminal_bar


def test_threads_sinks_and_a_clamped_estimate(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[ProgressState] = []
    caplog.set_level(logging.INFO, logger="pitrflow")
    with progress_sink(seen.append):
        # The server's estimate is short of what is sent: clamp, then finish at the real total.
        progress = Progress("backup of main", 1000, log_interval=0.0, sink_interval=0.0)
    outside: list[ProgressState] = []
    with progress_sink(outside.append):
        pass

    def work() -> None:
        for _ in range(100):
            progress.advance(3)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert progress.done == 1200
    assert all(s.percent <= 100 for s in seen) and seen[-1].percent == 100
    progress.finish()
    progress.finish()  # once only
    progress.advance(10)  # ignored after finish
    assert outside == []
    assert seen[0].done == 0 and seen[-1].finished and seen[-1].total == 1200
    assert [s for s in seen if s.finished] == [seen[-1]]
    assert seen[-1].line().startswith("backup of main: 1.2 KB of 1.2 KB (100%)")
    finished = [r.getMessage() for r in caplog.records if "done in" in r.getMessage()]
    assert len(finished) == 1


def test_lines_rate_and_eta() -> None:
    state = ProgressState("restore of main", 1_288_490_189, 2_791_728_742, 3.0)
    assert state.percent == 46
    assert state.line() == ("restore of main: 1.2 GB of 2.6 GB (46%), 409.6 MB/s, ETA 3 s")
    assert ProgressState("x", 0, 0, 0.0).eta_seconds is None


def test_terminal_bar_draws_only_on_a_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    with progress_sink(terminal_bar(tty)), progress_sink(terminal_bar(pipe)):
        progress = Progress("restore of main", 100, sink_interval=0.0)
        progress.advance(50)
        progress.finish()
    assert pipe.getvalue() == ""
    frames = tty.getvalue().split("\r")[1:]
    assert frames[0].startswith("[" + "-" * 30 + "] restore of main: 0 B of 100 B (0%)")
    assert frames[1].startswith("[" + "#" * 15 + "-" * 15 + "] restore of main: 50 B of 100 B")
    assert "(100%)" in frames[-1] and frames[-1].endswith("\n")
