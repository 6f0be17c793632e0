"""The dedicated system user that restored instances run as when we are root.

PostgreSQL refuses to run as root, so a root worker hands the data directory
(and the WAL spool) to an unprivileged user and starts the server as it.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from pitrflow import procs
from pitrflow.errors import CommandFailedError, RestoreRefusedError


def needs_run_as() -> bool:
    return os.geteuid() == 0


def ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = procs.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], what="useradd", check=False)
    # Two restores starting at once on one worker both find no user; one adds it.
    exit_user_exists = 9
    if result.returncode not in (0, exit_user_exists):
        said = procs.most_telling_line(result.stderr_tail) or f"exit status {result.returncode}"
        raise CommandFailedError(f"useradd {name} failed: {said}",
                                 f"create the system user {name} by hand (useradd --system)")


def chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


def check_reachable(path: Path, user: str | None) -> None:
    """Refuse when the server's user cannot reach its own data directory."""
    if user is None:
        return
    result = procs.run(["test", "-r", str(path), "-a", "-w", str(path), "-a", "-x", str(path)],
                       user=user, check=False, what="test")
    if result.returncode != 0:
        raise RestoreRefusedError(
            f"user {user} cannot reach {path}",
            f"choose a directory whose parents are traversable by {user} (e.g. under /var/lib)",
        )
