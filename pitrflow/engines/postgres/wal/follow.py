"""Follow mode: keep pg_receivewal running on the slot and store WAL as it arrives.

A batch ship run loses whatever was committed since the last run.  The
follower instead streams continuously (pitr ship INSTANCE --follow, the
follow_wal deployment, or the systemd unit and Kubernetes StatefulSet in
infra/), and in each cycle:

- stores every segment pg_receivewal completed (a file renamed from
  .partial) as soon as it appears, exactly as a ship run stores one;
- every `partial_interval` seconds uploads the segment in progress as a
  partial object, replacing the previous one (after the new one is stored);
- every `mark_interval` seconds commits a timestamped marker and, once the
  stored WAL reaches it, writes a mark: marks describe only what is stored;
- rewrites its heartbeat (follow_status) with its lag and receiver state.

When the server goes away it flushes the partial, then reconnects with
backoff; pg_receivewal follows a failover's new timeline by itself and the
history file is stored like any ship run's.  A stop (the `stop` event, or
SIGTERM through follow_until_signalled) ends the receiver, stores what it
received, and writes "stopped".  Every write goes through the repository's
atomic put, so a kill at any moment leaves nothing that looks valid but is
not.  The spool directory is the buffer between the slot (which advances as
pg_receivewal writes locally) and the repository: keep it on a disk that
survives a restart of the follower.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psycopg

from pitrflow import procs
from pitrflow.config import InstanceConfig
from pitrflow.engines.postgres import commands, sql
from pitrflow.engines.postgres.binaries import find_binaries
from pitrflow.engines.postgres.catalog.manifest import Mark, dump_mark
from pitrflow.engines.postgres.catalog.snapshot import Catalog, read_catalog
from pitrflow.engines.postgres.connection import connect, libpq_args, libpq_env
from pitrflow.engines.postgres.wal.follow_spool import (
    Backoff,
    RecoveryPoint,
    SpoolFile,
    looks_like_wal,
    next_partial_start,
    partial_end,
    scan_spool,
)
from pitrflow.engines.postgres.wal.follow_status import (
    FAILED,
    RECONNECTING,
    STARTING,
    STOPPED,
    STREAMING,
    FollowerStatus,
    write_status,
)
from pitrflow.engines.postgres.wal.slots import ensure_slot
from pitrflow.engines.postgres.wal.walnames import format_lsn, parse_lsn, segment_name
from pitrflow.engines.postgres.wal.walstore import (
    drop_superseded_partials,
    store_history,
    store_partial,
    store_segment,
)
from pitrflow.errors import FollowerError, PitrError, ServerError
from pitrflow.storage.base import Repository
from pitrflow.storage.layout import mark_key

log = logging.getLogger("pitrflow.follow")

_WAKE_WORDS = ("finished segment", "switched to timeline", "starting log streaming")
_STABLE_SECONDS = 30.0  # a session this long resets the reconnect backoff


@dataclass
class FollowOutcome:
    segments_stored: int = 0
    partials_stored: int = 0
    marks_written: int = 0
    histories_stored: int = 0
    sessions: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Marker:
    time: datetime
    timeline: int
    lsn: int


def follow_spool_dir(instance: InstanceConfig) -> Path:
    return instance.follow_dir / instance.name


@contextlib.contextmanager
def _spool_lock(spool: Path, instance: str) -> Iterator[None]:
    """One follower per instance: a second would fight the first for the slot and the spool."""
    with open(spool / ".follower.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FollowerError(f"another follower of {instance} is running on spool {spool}",
                                "stop it first; one follower per instance") from None
        yield


class Follower:
    def __init__(self, instance: InstanceConfig, repo: Repository, spool: Path,
                 stop: threading.Event) -> None:
        self.instance = instance
        self.repo = repo
        self.spool = spool
        self.stop = stop
        self.outcome = FollowOutcome()
        self.wake = threading.Event()
        self.catalog: Catalog = read_catalog(repo, instance.name)
        self.size = self.catalog.segment_size
        self.stored: dict[int, int] = {}  # timeline -> the stored WAL reaches this LSN
        self.markers: list[_Marker] = []
        self.recovery = RecoveryPoint()
        self.received_lsn: int | None = None
        self.sample_time: datetime | None = None
        self.timeline = 0
        self.placeholder: Path | None = None
        self.last_partial_data: bytes | None = None
        now = datetime.now(UTC)
        self.status = FollowerStatus(
            instance=instance.name, state=STARTING, host=socket.gethostname(), pid=os.getpid(),
            started_at=now, updated_at=now, synchronous=instance.synchronous,
            partial_interval=instance.partial_interval)
        self._reset_stored()

    def _reset_stored(self) -> None:
        self.stored = {tli: (max(segs) + 1) * self.size for tli, segs in self.catalog.wal.items()
                       if segs}
        for partial in self.catalog.partials:
            self.stored[partial.timeline] = max(self.stored.get(partial.timeline, 0),
                                                partial.end_lsn)

    # --- the loop ---

    def run(self) -> None:
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    self._session()
                    message = "the receiver stopped"
                except PitrError as exc:
                    message = exc.message
                    log.warning("follower of %s: %s", self.instance.name, exc.one_line())
                if self.stop.is_set():
                    break
                if time.monotonic() - started > _STABLE_SECONDS:
                    backoff.reset()
                delay = backoff.next()
                self._report(RECONNECTING, f"{message}; reconnecting in {delay:.0f} s")
                self.stop.wait(delay)
        except Exception as exc:  # a bug or a broken spool, not a stop: say so in the heartbeat
            self._final_flush(f"failed: {exc}")
            raise
        except BaseException:  # Ctrl-C, a cancelled flow run: a stop like SIGTERM
            self._final_flush(None)
            raise
        self._final_flush(None)

    def _session(self) -> None:
        self.outcome.sessions += 1
        with connect(self.instance) as conn:
            facts = sql.server_facts(conn)
            if facts.in_recovery:
                raise ServerError(f"instance {self.instance.name} is a standby",
                                  "follow the primary; after a failover the new primary")
            ensure_slot(conn, self.instance.slot_name)
            conn.execute(sql.SYNC_COMMIT_LOCAL)
            self.size = facts.segment_size
            self.timeline = facts.timeline
            self.status = self.status.with_(timeline=facts.timeline)
            self.catalog = read_catalog(self.repo, self.instance.name)
            self.catalog.segment_size = facts.segment_size
            self._reset_stored()
            self.recovery.forget()
            self.markers.clear()
            self.received_lsn = None
            self._prepare_spool()
            bins = find_binaries(facts.major, self.instance.bin_dir, needs=("pg_receivewal",))
            env, secrets = libpq_env(self.instance)
            env["PGAPPNAME"] = self.instance.slot_name  # synchronous_standby_names names it
            argv = commands.receivewal_follow_argv(
                bins, libpq_args(self.instance), self.spool, slot=self.instance.slot_name,
                synchronous=self.instance.synchronous)
            lost: psycopg.Error | None = None
            with procs.spawn(argv, env=env, secrets=secrets, stdout=subprocess.DEVNULL,
                             line_sink=self._receiver_line, name="pg_receivewal") as (proc, tail):
                try:
                    self._stream(conn, proc)
                    if self.stop.is_set() and proc.poll() is None:
                        self._drain(conn)
                except psycopg.Error as exc:
                    lost = exc
                if proc.poll() is None:
                    procs.kill_group(proc)  # TERM: pg_receivewal flushes and exits
            # Whatever the receiver got before the server went away is stored now.
            self._collect()
            self._upload_partial(final=True)
            self._write_marks()
        if lost is not None and not self.stop.is_set():
            first = str(lost).strip().splitlines()[0] if str(lost).strip() else "lost"
            raise ServerError(f"lost the connection to {self.instance.name}: {first}",
                              "the follower reconnects by itself")
        if proc.returncode not in (0, None) and not self.stop.is_set():
            line = procs.most_telling_line(list(tail)) or f"exit status {proc.returncode}"
            raise ServerError(f"pg_receivewal for {self.instance.name} ended: {line}",
                              "the follower reconnects by itself")

    def _stream(self, conn: psycopg.Connection, proc: subprocess.Popen[bytes]) -> None:
        interval = float(self.instance.partial_interval)
        next_partial = time.monotonic()
        next_marker = time.monotonic()
        while not self.stop.is_set() and proc.poll() is None:
            self._collect()
            now = time.monotonic()
            if now >= next_marker:
                self._emit_marker(conn)
                next_marker = now + self.instance.mark_interval
            if now >= next_partial:
                started = time.monotonic()
                self._positions(conn)
                self._collect()
                self._upload_partial(final=False)
                self._write_marks()
                self._report(STREAMING, "")
                next_partial = next_partial_start(started, interval, time.monotonic() - started)
            self.wake.wait(max(0.05, min(0.5, next_partial - time.monotonic())))
            self.wake.clear()

    def _drain(self, conn: psycopg.Connection, seconds: float = 3.0) -> None:
        """On a clean stop, let the receiver write what the server flushed, so the final
        partial and marks reach as far as the server did (a status report comes each second)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._positions(conn)
            if self.received_lsn is not None and self.received_lsn >= (
                    self.status.server_lsn or 0):
                return
            time.sleep(0.2)

    def _receiver_line(self, line: str) -> None:
        log.info("pg_receivewal: %s", line)
        if any(word in line for word in _WAKE_WORDS):
            self.wake.set()

    # --- the server ---

    def _positions(self, conn: psycopg.Connection) -> None:
        row = conn.execute(sql.FOLLOW_POSITIONS, (self.instance.slot_name,)).fetchone()
        if row is None:
            raise ServerError(f"replication slot {self.instance.slot_name} disappeared",
                              "the follower recreates it on reconnect; take a full backup")
        when, flush, write = row[0], parse_lsn(row[1]), row[2]
        if write is not None:
            self.received_lsn = parse_lsn(write)
        self.recovery.observe(when, self.timeline, flush)
        self.status = self.status.with_(server_lsn=flush, received_lsn=self.received_lsn,
                                        timeline=self.timeline)
        self.sample_time = when

    def _emit_marker(self, conn: psycopg.Connection) -> None:
        row = conn.execute(sql.EMIT_MARK, (f"follow mark {self.instance.name}",)).fetchone()
        lsn = conn.execute(sql.FLUSH_LSN).fetchone()
        assert row is not None and lsn is not None
        # now() is the marker transaction's start; its commit record, flushed before
        # the flush position read after it, carries a later timestamp.
        self.markers.append(_Marker(row[0], self.timeline, parse_lsn(lsn[0])))

    # --- the spool and the repository ---

    def _prepare_spool(self) -> None:
        """Store what a previous run left, then make pg_receivewal resume after the repository."""
        self._collect()
        scan = scan_spool(self.spool, self.size)
        newest_partial = scan.partials[0] if scan.partials else None
        for extra in scan.partials[1:]:
            extra.path.unlink()
        if newest_partial and newest_partial.segno in self.catalog.wal.get(
                newest_partial.timeline, {}):
            newest_partial.path.unlink()
            newest_partial = None
        if newest_partial is not None:
            self._upload_partial(final=True)  # what the last run received before it died
        self.placeholder = None
        stored = [(segno, tli) for tli, segs in self.catalog.wal.items() for segno in segs]
        if stored:
            segno, tli = max(stored)
            if newest_partial is None or newest_partial.segno <= segno:
                self.placeholder = self.spool / segment_name(tli, segno, self.size)
                with open(self.placeholder, "wb") as handle:
                    handle.truncate(self.size)  # sparse: no disk used

    def _collect(self) -> None:
        """Store completed segments and history files that appeared in the spool."""
        scan = scan_spool(self.spool, self.size)
        for path in scan.histories:
            if store_history(self.repo, self.catalog, path):
                self.outcome.histories_stored += 1
                log.info("stored timeline history %s", path.name)
        for found in scan.completed:
            self._store_completed(found)

    def _store_completed(self, found: SpoolFile) -> None:
        if found.path == self.placeholder:
            return  # pg_receivewal may not have read the directory yet
        if found.segno not in self.catalog.wal.get(found.timeline, {}):
            with open(found.path, "rb") as handle:
                head = handle.read(8)
            if os.path.getsize(found.path) != self.size or not looks_like_wal(head):
                if found.path.stat().st_blocks == 0:  # our own placeholder of an older run
                    found.path.unlink()
                    return
                raise FollowerError(f"spool file {found.path} is not a WAL segment",
                                    "remove it; the follower will stream the segment again")
            entry = store_segment(self.repo, self.instance.name, found.path, found.timeline)
            self.catalog.wal.setdefault(found.timeline, {})[found.segno] = entry
            self.outcome.segments_stored += 1
            self.status = self.status.with_(last_segment=entry.segment,
                                            last_upload_at=datetime.now(UTC))
            end = (found.segno + 1) * self.size
            self.stored[found.timeline] = max(self.stored.get(found.timeline, 0), end)
            log.info("stored segment %s", entry.segment)
            drop_superseded_partials(self.repo, self.catalog)
        found.path.unlink()

    def _upload_partial(self, final: bool) -> None:
        scan = scan_spool(self.spool, self.size)
        if not scan.partials:
            return
        newest = scan.partials[0]
        if newest.segno in self.catalog.wal.get(newest.timeline, {}):
            return
        data = newest.path.read_bytes()
        if data == self.last_partial_data or not looks_like_wal(data[:8]):
            return
        previous = self.catalog.partial_for(newest.timeline, newest.segno)
        end = partial_end(newest.segno, self.size, self.received_lsn,
                          previous.end_lsn if previous else None, data)
        # Read at: the server's time when it last reported the receiver's position (the
        # file holds at least that much), or now for the flush after the receiver ended.
        when = self.sample_time if not final and self.sample_time else datetime.now(UTC)
        entry = store_partial(self.repo, self.instance.name, data, newest.timeline,
                              newest.segment, end, when, self.size)
        self.catalog.partials.append(entry)
        self.last_partial_data = data
        self.outcome.partials_stored += 1
        self.stored[newest.timeline] = max(self.stored.get(newest.timeline, 0), end)
        self.status = self.status.with_(last_partial=f"{entry.segment} to {format_lsn(end)}",
                                        last_upload_at=datetime.now(UTC))
        drop_superseded_partials(self.repo, self.catalog)

    def _write_marks(self) -> None:
        for marker in list(self.markers):
            if self.stored.get(marker.timeline, -1) < marker.lsn:
                continue
            last = segment_name(marker.timeline, (marker.lsn - 1) // self.size, self.size)
            mark = Mark(instance=self.instance.name, timeline=marker.timeline, lsn=marker.lsn,
                        time=marker.time, last_segment=last)
            self.repo.put_bytes(mark_key(self.instance.name, marker.time, marker.timeline,
                                         marker.lsn), dump_mark(mark))
            self.markers.remove(marker)
            self.outcome.marks_written += 1

    def _report(self, state: str, message: str) -> None:
        point = self.recovery.advance(self.stored)
        self.status = self.status.with_(
            state=state, message=message, updated_at=datetime.now(UTC), recovery_point=point,
            stored_lsn=self.stored.get(self.status.timeline or 0),
            counts={"segments": self.outcome.segments_stored,
                    "partials": self.outcome.partials_stored,
                    "marks": self.outcome.marks_written, "sessions": self.outcome.sessions})
        try:
            write_status(self.repo, self.status)
        except PitrError as exc:  # the next cycle writes it again
            log.warning("cannot write the follower status of %s: %s", self.instance.name,
                        exc.message)

    def _final_flush(self, failure: str | None) -> None:
        """What the receiver wrote since the last cycle goes to the repository before we exit."""
        try:
            self._collect()
            self._upload_partial(final=True)
            self._write_marks()
        except PitrError as exc:
            log.warning("final flush of %s failed: %s", self.instance.name, exc.one_line())
        if failure is None:
            self._report(STOPPED, "stopped")
        else:
            self._report(FAILED, failure)


def follow_wal(instance: InstanceConfig, repo: Repository, stop: threading.Event,
               spool: Path | None = None) -> FollowOutcome:
    """Stream the instance's WAL into the repository until `stop` is set."""
    if instance.engine != "postgresql":
        raise FollowerError(f"instance {instance.name} is not PostgreSQL",
                            "follow mode streams PostgreSQL WAL")
    spool = spool or follow_spool_dir(instance)
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.monotonic()
    with _spool_lock(spool, instance.name):
        follower = Follower(instance, repo, spool, stop)
        log.info("following %s into %s (partial every %d s, marks every %d s%s)",
                 instance.name, repo.describe(), instance.partial_interval,
                 instance.mark_interval, ", synchronous" if instance.synchronous else "")
        follower.run()
    follower.outcome.seconds = time.monotonic() - started
    return follower.outcome


def follow_until_signalled(instance: InstanceConfig, repo: Repository) -> FollowOutcome:
    """follow_wal for a service: SIGTERM and SIGINT stop it cleanly (the CLI's --follow)."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the follower of %s", signum, instance.name)
        stop.set()

    # Handlers can only be set from the main thread; elsewhere (a flow run in a worker
    # thread) cancellation arrives as an exception, and follow_wal's cleanup runs all the same.
    main = threading.current_thread() is threading.main_thread()
    previous = ({sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
                if main else {})
    if not logging.getLogger("pitrflow").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("pitrflow").addHandler(handler)
    try:
        return follow_wal(instance, repo, stop)
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
