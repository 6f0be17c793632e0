"""pitrflow.procs: real child processes (sh, sleep, cat), no mocks."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from pathlib import Path

import pytest

from pitrflow import procs
from pitrflow.errors import CommandFailedError

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="process group checks read /proc (Linux only)")


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live process in process group `pgid` (zombies are dead)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # Fields after "(comm)": state ppid pgrp ...
        state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append((int(entry.name), cmdline.replace(b"\0", b" ").decode().strip()))
    return members


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in ("Z", "X")


def wait_for_empty_group(pgid: int, seconds: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    while True:
        members = group_members(pgid)
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.05)


class GroupWatcher:
    """A line_sink that learns the child's group from its first stderr line."""

    pattern = re.compile(r"^group (\d+) background (\d+)$")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.pgid: int | None = None
        self.background: int | None = None
        self.seen: list[tuple[int, str]] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        match = self.pattern.match(line)
        if match:
            self.pgid, self.background = int(match.group(1)), int(match.group(2))
            self.seen = group_members(self.pgid)

    def cleanup(self) -> None:
        """Kill what this test started if the code under test left it running."""
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)


# --- results ---


def test_run_returns_stdout() -> None:
    result = procs.run(["sh", "-c", "printf 'first\\nsecond\\n'"])
    assert result.returncode == 0
    assert result.stdout == b"first\nsecond\n"
    assert result.stdout_text == "first\nsecond\n"
    assert result.argv == ["sh", "-c", "printf 'first\\nsecond\\n'"]
    assert result.seconds >= 0


def test_run_passes_input_env_and_cwd(tmp_path: Path) -> None:
    assert procs.run(["cat"], input_bytes=b"to stdin").stdout == b"to stdin"
    env = procs.run(["sh", "-c", 'printf %s "$PITR_TEST_VALUE"'],
                    env={"PITR_TEST_VALUE": "from env"})
    assert env.stdout == b"from env"
    assert procs.run(["pwd"], cwd=tmp_path).stdout_text.strip() == str(tmp_path)


def test_large_stdout_and_chatty_stderr_do_not_block() -> None:
    lines: list[str] = []
    script = "i=0; while [ $i -lt 3000 ]; do echo \"progress $i\" >&2; i=$((i+1)); done; " \
             "head -c 3000000 /dev/zero"
    result = procs.run(["sh", "-c", script], line_sink=lines.append, timeout=60)
    assert len(result.stdout) == 3_000_000
    assert len(lines) == 3000
    assert lines[-1] == "progress 2999"
    assert len(result.stderr_tail) == 40
    assert result.stderr_tail[-1] == "progress 2999"


def test_stderr_goes_to_the_log_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pitrflow.procs")
    procs.run(["sh", "-c", "echo 'hello from stderr' >&2"], what="greeter")
    assert "greeter: hello from stderr" in caplog.messages


def test_a_line_the_child_just_said_is_logged_once_and_kept_in_the_tail() -> None:
    lines: list[str] = []
    script = "echo 'stopped at 0/4' >&2; echo 'not renaming' >&2; echo 'stopped at 0/4' >&2"
    result = procs.run(["sh", "-c", script], line_sink=lines.append, timeout=60)
    assert lines == ["stopped at 0/4", "not renaming"]
    assert result.stderr_tail == ["stopped at 0/4", "not renaming", "stopped at 0/4"]


# --- failures ---


def test_failing_command_raises_with_the_most_telling_stderr_line() -> None:
    script = (
        "echo 'pg_basebackup: initiating base backup' >&2; "
        "echo 'pg_basebackup: error: could not connect to server: Connection refused' >&2; "
        "echo 'pg_basebackup: removing data directory \"/tmp/x\"' >&2; "
        "echo 'stdout is not the reason'; exit 3"
    )
    with pytest.raises(CommandFailedError) as caught:
        procs.run(["sh", "-c", script], what="pg_basebackup")
    assert caught.value.message == (
        "pg_basebackup failed: pg_basebackup: error: could not connect to server: "
        "Connection refused"
    )
    assert caught.value.hint == "see the log for its full output"
    assert caught.value.exit_status == 5


def test_failure_without_a_telling_line_uses_the_last_line() -> None:
    with pytest.raises(CommandFailedError) as caught:
        procs.run(["sh", "-c", "echo one >&2; echo two >&2; exit 1"], what="tool")
    assert caught.value.message == "tool failed: two"


def test_silent_failure_reports_the_exit_status() -> None:
    with pytest.raises(CommandFailedError) as caught:
        procs.run(["sh", "-c", "exit 7"])
    assert caught.value.message == "sh failed: exit status 7"


def test_check_false_returns_the_failure() -> None:
    result = procs.run(["sh", "-c", "echo out; echo 'FATAL: nope' >&2; exit 2"], check=False)
    assert result.returncode == 2
    assert result.stdout == b"out\n"
    assert result.stderr_tail == ["FATAL: nope"]


def test_missing_program_raises_oserror() -> None:
    with pytest.raises(FileNotFoundError):
        procs.run(["/nonexistent/pitrflow-no-such-program"])


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["starting", "x: error: first", "cleanup"], "x: error: first"),
        (["a: error: one", "FATAL:  two", "removing"], "FATAL:  two"),
        (["ERROR:  relation missing", "done"], "ERROR:  relation missing"),
        (["just", "chatter"], "chatter"),
        ([], None),
    ],
)
def test_most_telling_line(lines: list[str], expected: str | None) -> None:
    assert procs.most_telling_line(lines) == expected


# --- timeouts ---


def test_timeout_kills_the_whole_process_group() -> None:
    watcher = GroupWatcher()
    script = 'sleep 30 & echo "group $$ background $!" >&2; sleep 30'
    started = time.monotonic()
    try:
        with pytest.raises(CommandFailedError) as caught:
            procs.run(["sh", "-c", script], timeout=1, line_sink=watcher, what="sleeper")
        elapsed = time.monotonic() - started
        assert caught.value.message == "sleeper did not finish within 1 s and was stopped"
        assert watcher.pgid is not None and watcher.background is not None
        # The check below can fail: the group really held the backgrounded sleep.
        assert any(pid == watcher.background for pid, _ in watcher.seen)
        assert wait_for_empty_group(watcher.pgid, 5.0) == []
        assert not alive(watcher.background)
        assert elapsed < 10, f"run took {elapsed:.1f} s to give up after a 1 s timeout"
    finally:
        watcher.cleanup()


def test_timeout_kills_a_group_member_that_ignores_term() -> None:
    watcher = GroupWatcher()
    script = ('(trap "" TERM; exec sleep 30) >/dev/null 2>&1 & '
              'echo "group $$ background $!" >&2; sleep 30')
    try:
        with pytest.raises(CommandFailedError, match="did not finish within 1 s"):
            procs.run(["sh", "-c", script], timeout=1, line_sink=watcher, what="sleeper")
        assert watcher.pgid is not None
        assert any(pid == watcher.background for pid, _ in watcher.seen)
        assert wait_for_empty_group(watcher.pgid, 3.0) == []
    finally:
        watcher.cleanup()


# --- secrets ---


def test_secrets_are_redacted_from_captured_lines() -> None:
    lines: list[str] = []
    script = ("echo 'connecting with password=hunter2 to db1' >&2; "
              "echo 'PGPASSWORD=hunter2hunter2' >&2; echo 'nothing secret here' >&2; "
              "echo 'stdout keeps hunter2'")
    result = procs.run(["sh", "-c", script], secrets=["", "hunter2"], line_sink=lines.append)
    assert lines == [
        "connecting with password=******** to db1",
        "PGPASSWORD=****************",
        "nothing secret here",
    ]
    assert result.stderr_tail == lines
    assert result.stdout == b"stdout keeps hunter2\n"


def test_secrets_are_redacted_from_the_failure_message() -> None:
    lines: list[str] = []
    script = "echo 'psql: error: password s3cr3t-pw rejected for user app' >&2; exit 2"
    with pytest.raises(CommandFailedError) as caught:
        procs.run(["sh", "-c", script], secrets=["s3cr3t-pw"], line_sink=lines.append,
                  what="psql")
    assert caught.value.message == (
        "psql failed: psql: error: password ******** rejected for user app"
    )
    assert "s3cr3t-pw" not in caught.value.one_line()
    assert lines == ["psql: error: password ******** rejected for user app"]


def test_secrets_are_redacted_from_the_logged_command_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pitrflow.procs")
    procs.run(["sh", "-c", "echo \"$0\" >&2", "conninfo password=topsecret"],
              secrets=["topsecret"])
    text = "\n".join(caplog.messages)
    assert "topsecret" not in text
    assert "password=********" in text


def test_redact() -> None:
    assert procs.redact("a secret and a secret", ["secret"]) == "a ******** and a ********"
    assert procs.redact("nothing", ["", "x"]) == "nothing"
    assert procs.redact("k1 k2", ["k1", "k2"]) == "******** ********"
