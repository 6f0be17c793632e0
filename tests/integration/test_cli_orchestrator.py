"""The CLI and the orchestrator: a restore never waits on Prefect, and never needs it.

A Prefect server that is configured but down must not stop a restore (nor a
verify, nor info); scheduled work refuses in one line rather than silently
bypass it, unless --local says so.  With no server configured, the CLI runs
the core steps itself and never imports Prefect, so no temporary server starts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from pitrflow.engines.postgres.catalog.snapshot import read_catalog
from tests.conftest import Env, free_port, restored_ids

DOWN_NOTE = "does not answer: running without the orchestrator"


def closed_port_url() -> str:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def pitr(env: Env, *args: str, api_url: str | None, home: Path,
         probe_prefect: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `pitr --config ... ARGS` as a user would; PREFECT_HOME is a fresh, empty one."""
    run_env = dict(os.environ)
    run_env.pop("PREFECT_API_URL", None)
    run_env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        run_env["PREFECT_API_URL"] = api_url
    argv = ["--config", str(env.config_path), *args]
    if probe_prefect:
        # The same entry point, then one more line: was Prefect imported at all?
        code = ("import sys; from pitrflow.cli import main; rc = main(sys.argv[1:]); "
                "print('prefect imported:', 'prefect' in sys.modules); sys.exit(rc)")
        command = [sys.executable, "-c", code, *argv]
    else:
        command = [sys.executable, "-m", "pitrflow.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=run_env, timeout=600,
                          check=False, cwd=home)


def test_restore_info_and_verify_run_when_the_server_is_down(env18: Env,
                                                             tmp_path: Path) -> None:
    down = closed_port_url()
    home = tmp_path / "home"
    home.mkdir()
    for args in (("backup", "full", "main", "--local"), ("ship", "main", "--local")):
        done = pitr(env18, *args, api_url=down, home=home)
        assert done.returncode == 0, done.stderr
    ids = [env18.commit_row()[0] for _ in range(3)]
    assert pitr(env18, "ship", "main", "--local", api_url=down, home=home).returncode == 0

    pgdata = env18.root / "restored"
    dry = pitr(env18, "restore", "main", "--to", "latest", "--pgdata", str(pgdata),
               "--dry-run", api_url=down, home=home)
    assert dry.returncode == 0, dry.stderr
    assert DOWN_NOTE in dry.stderr and down in dry.stderr
    assert "dry run: nothing was changed" in dry.stdout and not pgdata.exists()

    port = free_port()
    real = pitr(env18, "restore", "main", "--to", "latest", "--pgdata", str(pgdata),
                "--port", str(port), api_url=down, home=home)
    assert real.returncode == 0, real.stderr
    assert DOWN_NOTE in real.stderr
    assert restored_ids(port)[-3:] == ids

    info = pitr(env18, "info", "main", api_url=down, home=home)
    assert info.returncode == 0 and "recoverable:" in info.stdout
    verify = pitr(env18, "verify", "main", api_url=down, home=home)
    assert verify.returncode == 0, verify.stderr
    assert DOWN_NOTE in verify.stderr and ": OK (" in verify.stdout


def test_scheduled_work_refuses_a_down_server_unless_local(env18: Env, tmp_path: Path) -> None:
    down = closed_port_url()
    home = tmp_path / "home"
    home.mkdir()
    for args in (("backup", "full", "main"), ("ship", "main"), ("drill", "main"),
                 ("expire", "main"), ("check", "main")):
        refused = pitr(env18, *args, api_url=down, home=home)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 14, (args, refused.stderr)
        assert lines == [lines[0]] and lines[0].startswith(
            "error [orchestrator-unreachable]: the Prefect server at " + down), lines
        assert "--local" in lines[0] and "Traceback" not in refused.stderr
    assert read_catalog(env18.repo, "main").backups == []  # nothing was written
    assert not list(env18.repo.list("main/"))

    local = pitr(env18, "backup", "full", "main", "--local", api_url=down, home=home)
    assert local.returncode == 0, local.stderr
    [backup] = read_catalog(env18.repo, "main").backups
    assert f"backup {backup.id} (full) of main complete" in local.stdout


def test_no_server_configured_means_no_prefect_at_all(env18: Env, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for args in (("backup", "full", "main"), ("ship", "main"),
                 ("restore", "main", "--to", "latest", "--pgdata",
                  str(env18.root / "restored"), "--port", str(free_port()))):
        done = pitr(env18, *args, api_url=None, home=home, probe_prefect=True)
        assert done.returncode == 0, done.stderr
        assert "prefect imported: False" in done.stdout, (args, done.stdout)
        assert "orchestrator" not in done.stderr
    catalog = read_catalog(env18.repo, "main")
    assert len(catalog.backups) == 1 and catalog.marks
    # No profile, database or server of Prefect's was created in its home either.
    assert not list(home.iterdir())
