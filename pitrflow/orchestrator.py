"""Is a Prefect server there?  Answered without importing Prefect.

The CLI runs its work as Prefect flows only when a server is configured and
answers, so the runs show in the UI.  Otherwise it runs the same core steps
itself: a restore must never wait on, or fail because of, the orchestrator,
and importing Prefect (or starting its temporary server) would cost seconds
on every command.  Prefect's own settings are read the way Prefect reads
them, in its order: the environment, a `.env` and a `prefect.toml` in the
working directory, then the active profile.
"""

from __future__ import annotations

import os
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pitrflow.errors import OrchestratorUnreachableError

API_URL = "PREFECT_API_URL"
PROBE_TIMEOUT_SECONDS = 3.0

# restore and verify only read the repository and never race a scheduled run, so
# they run without the orchestrator whenever it is down; scheduled work (backups,
# ships, drills, expire, check) would silently bypass a broken server, so it
# needs --local for that.
Urgency = Literal["restore", "scheduled"]


def _from_dotenv(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key.strip() == API_URL:
            return value.strip().strip("'\"") or None
    return None


def _from_toml(path: Path, *keys: str) -> str | None:
    try:
        doc: object = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc if isinstance(doc, str) and doc else None


def _from_profile() -> str | None:
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or doc.get("active") or "ephemeral"
    profile = doc.get("profiles", {}).get(active, {})
    value = profile.get(API_URL) if isinstance(profile, dict) else None
    return value if isinstance(value, str) and value else None


def configured_api_url() -> str | None:
    """The Prefect API this process would talk to; None means no server is configured."""
    if API_URL in os.environ:
        return os.environ[API_URL] or None
    cwd = Path.cwd()
    return (_from_dotenv(cwd / ".env") or _from_toml(cwd / "prefect.toml", "api", "url")
            or _from_profile())


def answers(api_url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """True when the API's health endpoint answers (any HTTP reply counts: a server is up)."""
    url = api_url.rstrip("/") + "/health"
    request = urllib.request.Request(url, headers={"User-Agent": "pitrflow"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - http(s) only
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class RunMode:
    """How a CLI command runs: as a Prefect flow, or directly; `note` says why, if it must."""

    use_prefect: bool
    note: str | None = None


def choose_run_mode(urgency: Urgency, local: bool) -> RunMode:
    """Flows when a server is configured and answers; the core steps directly otherwise.

    A configured server that does not answer is said in one line: restores and
    verifies go on without it, scheduled work refuses unless --local is given.
    """
    if local:
        return RunMode(False)
    url = configured_api_url()
    if url is None:
        return RunMode(False)
    if answers(url):
        return RunMode(True)
    if urgency == "restore":
        return RunMode(False, f"note: the Prefect server at {url} does not answer: running "
                              "without the orchestrator (this run will not show in the "
                              "Prefect UI)")
    raise OrchestratorUnreachableError(
        f"the Prefect server at {url} ({API_URL}) does not answer",
        "start it, or run again with --local to run without the orchestrator (the run will "
        "not show in the Prefect UI, and no deployment's concurrency limit holds)")
