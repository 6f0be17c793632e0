"""The one door through which pitrflow starts child processes.

Every child gets an argv list (never a shell string), its own session so
that a timeout, an exception or a cancelled flow kills the whole process
group (TERM, then KILL), and its stderr drained line by line into the log,
with secrets redacted.  Draining continuously also keeps a chatty child from
blocking on a full pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from pitrflow.errors import CommandFailedError

log = logging.getLogger("pitrflow.procs")

_TERM_GRACE_SECONDS = 10.0


@dataclass
class ProcResult:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


_TELLING = ("error:", "FATAL:", "ERROR:", "PANIC:", "fatal:")


def most_telling_line(lines: list[str]) -> str | None:
    """The line that says why a PostgreSQL program failed, not its cleanup chatter."""
    for line in reversed(lines):
        if any(word in line for word in _TELLING):
            return line
    return lines[-1] if lines else None


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def _user_kwargs(user: str | None) -> dict[str, object]:
    """Popen arguments that drop privileges to `user` (only when root)."""
    if user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _child_env(env: Mapping[str, str] | None, user: str | None) -> dict[str, str]:
    merged = dict(os.environ)
    if env:
        merged.update(env)
    if user is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        merged["HOME"] = entry.pw_dir
        merged["USER"] = merged["LOGNAME"] = user
    return merged


_libc = None


def _die_with_parent() -> None:
    """Runs in the child before exec: if pitrflow is killed, its children die too.

    Without this a SIGKILLed worker leaves pg_basebackup running on in its
    own session, still writing and still holding a WAL sender.
    """
    global _libc
    if sys.platform != "linux":
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_group(proc: subprocess.Popen[bytes], grace: float = _TERM_GRACE_SECONDS) -> None:
    """TERM the child's process group, then KILL whatever is still alive."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # The leader may have obeyed TERM while a member of its group ignored it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _drain(stream: IO[bytes], sink: Callable[[str], None], tail: deque[str],
           secrets: Sequence[str]) -> None:
    # pg_receivewal and pg_basebackup say some things twice (the leader and its WAL
    # child, or the end of streaming reported on two paths): a line the child just
    # said is kept in the tail but logged once.
    recent: deque[str] = deque(maxlen=8)
    for raw in iter(stream.readline, b""):
        line = redact(raw.decode("utf-8", "replace").rstrip(), secrets)
        if line:
            tail.append(line)
            if line not in recent:
                sink(line)
            recent.append(line)
    stream.close()


@contextlib.contextmanager
def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user: str | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    secrets: Sequence[str] = (),
    line_sink: Callable[[str], None] | None = None,
    name: str | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], deque[str]]]:
    """Start a child and guarantee its process group is gone when the block exits.

    The caller owns stdin/stdout (for streaming); stderr is drained into the
    log.  Any exception inside the block, including KeyboardInterrupt and
    cancellation, kills the group before it propagates.
    """
    argv = [str(a) for a in argv]
    label = name or os.path.basename(argv[0])
    sink = line_sink or (lambda line: log.info("%s: %s", label, line))
    log.debug("running %s", redact(shlex.join(argv), secrets))
    proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
        argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd=cwd,
        env=_child_env(env, user), start_new_session=True, preexec_fn=_die_with_parent,
        **_user_kwargs(user),
    )
    tail: deque[str] = deque(maxlen=40)
    assert proc.stderr is not None
    drainer = threading.Thread(target=_drain, args=(proc.stderr, sink, tail, secrets),
                               daemon=True)
    drainer.start()
    try:
        yield proc, tail
    except BaseException:
        kill_group(proc, grace=2.0)
        raise
    finally:
        if proc.poll() is None:
            kill_group(proc)
        drainer.join(timeout=5)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user: str | None = None,
    timeout: float | None = None,
    input_bytes: bytes | None = None,
    check: bool = True,
    secrets: Sequence[str] = (),
    line_sink: Callable[[str], None] | None = None,
    what: str | None = None,
) -> ProcResult:
    """Run a child to completion; raise CommandFailedError on failure or timeout."""
    started = time.monotonic()
    label = what or os.path.basename(str(argv[0]))
    stdin = subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL
    with spawn(argv, env=env, cwd=cwd, user=user, stdin=stdin, secrets=secrets,
               line_sink=line_sink, name=label) as (proc, tail):
        chunks: list[bytes] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        collector = threading.Thread(target=lambda: chunks.append(stdout.read()), daemon=True)
        collector.start()
        if input_bytes is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(input_bytes)
            except BrokenPipeError:
                pass
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc, grace=2.0)
            raise CommandFailedError(
                f"{label} did not finish within {timeout:.0f} s and was stopped",
                "look at the log lines above; raise the timeout if the server is just slow",
            ) from None
        collector.join(timeout=30)
        out = b"".join(chunks)
    result = ProcResult(list(map(str, argv)), proc.returncode, out or b"", list(tail),
                        time.monotonic() - started)
    if check and result.returncode != 0:
        last = most_telling_line(list(tail)) or f"exit status {result.returncode}"
        raise CommandFailedError(f"{label} failed: {last}",
                                 "see the log for its full output")
    return result
