"""Progress of long transfers (backups, restores): bytes done of a total, rate and ETA.

A `Progress` is advanced from any thread.  It logs one line on the `pitrflow`
logger every few seconds, and hands the same snapshot to the sinks that were
registered, through `progress_sink`, in the context that created it: the
Prefect tasks register one that updates a progress artifact, the CLI one that
draws a one-line bar on a terminal, tests one that records what they see.
The core never imports Prefect; a sink is a plain callable.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from pitrflow.render import human_bytes

log = logging.getLogger("pitrflow.progress")

LOG_INTERVAL = 5.0
SINK_INTERVAL = 0.5


@dataclass(frozen=True)
class ProgressState:
    what: str
    done: int
    total: int
    seconds: float
    finished: bool = False

    @property
    def fraction(self) -> float:
        """0.0 to 1.0, clamped: a server's size estimate can be short of the bytes sent."""
        if self.finished:
            return 1.0
        if self.total <= 0:
            return 0.0
        return min(1.0, self.done / self.total)

    @property
    def percent(self) -> int:
        return int(self.fraction * 100)

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.finished:
            return 0.0
        if self.rate <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def line(self) -> str:
        """e.g. 'restore of main: 1.2 GB of 2.6 GB (46%), 420 MB/s, ETA 3 s'."""
        shown_done = min(self.done, self.total) if self.total > 0 else self.done
        text = (f"{self.what}: {human_bytes(shown_done)} of {human_bytes(self.total)} "
                f"({self.percent}%), {human_bytes(int(self.rate))}/s")
        if self.finished:
            return text + f", done in {self.seconds:.1f} s"
        eta = self.eta_seconds
        return text + (f", ETA {eta:.0f} s" if eta is not None else "")


Sink = Callable[[ProgressState], None]

_SINKS: contextvars.ContextVar[tuple[Sink, ...]] = contextvars.ContextVar(
    "pitrflow_progress_sinks", default=())


@contextlib.contextmanager
def progress_sink(sink: Sink) -> Iterator[None]:
    """Every Progress created inside this block also reports to `sink`."""
    token = _SINKS.set((*_SINKS.get(), sink))
    try:
        yield
    finally:
        _SINKS.reset(token)


class Progress:
    """Thread-safe byte counter for one operation; finish() reports exactly 100%."""

    def __init__(self, what: str, total_bytes: int, *, log_interval: float = LOG_INTERVAL,
                 sink_interval: float = SINK_INTERVAL) -> None:
        self.what = what
        self.total = max(0, int(total_bytes))
        self._done = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_log = self._started
        self._last_sink = 0.0
        self._log_interval = log_interval
        self._sink_interval = sink_interval
        self._finished = False
        # Captured here: worker threads do not inherit the creator's context.
        self._sinks = _SINKS.get()
        self._emit(self.state(), to_log=False)

    @property
    def done(self) -> int:
        return self._done

    def state(self) -> ProgressState:
        return ProgressState(self.what, self._done, self.total,
                             time.monotonic() - self._started, self._finished)

    def advance(self, n: int) -> None:
        if n <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if self._finished:
                return
            self._done += n
            to_log = now - self._last_log >= self._log_interval
            to_sinks = now - self._last_sink >= self._sink_interval
            if to_log:
                self._last_log = now
            if to_sinks:
                self._last_sink = now
            state = self.state() if to_log or to_sinks else None
        if state is not None:
            self._emit(state, to_log=to_log, to_sinks=to_sinks)

    def finish(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            # A total estimated up front (a server's database size) may be off either way:
            # what was done is the whole.
            if self._done > 0:
                self.total = self._done
            state = self.state()
        self._emit(state, to_log=True)

    def _emit(self, state: ProgressState, *, to_log: bool, to_sinks: bool = True) -> None:
        if to_log:
            log.info("%s", state.line())
        if to_sinks:
            for sink in self._sinks:
                try:
                    sink(state)
                except Exception as exc:  # noqa: BLE001 - a display must never fail a restore
                    log.debug("progress sink failed: %s", exc)


def terminal_bar(stream: TextIO | None = None, width: int = 30) -> Sink:
    """A sink drawing one updating line on a terminal; silent when `stream` is not a TTY."""
    out = stream or sys.stderr

    def draw(state: ProgressState) -> None:
        if not out.isatty():
            return
        filled = int(state.fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        out.write(f"\r[{bar}] {state.line()}\x1b[K")
        if state.finished:
            out.write("\n")
        out.flush()

    return draw
