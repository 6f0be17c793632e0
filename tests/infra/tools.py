"""checkov in a virtualenv of its own, made once per machine.

checkov pins packaging==23.2 and boto3==1.35.x and ships bc-python-hcl2,
which installs the same top-level `hcl2` package as python-hcl2.  In the
project's environment that downgrades what pytest 9 and the S3 driver need
and leaves two libraries writing one directory, so it lives apart: a cached
venv under ~/.cache/pitrflow-tools, created with pip the first time (about
25 s) and reused after.  PITRFLOW_CHECKOV points at another checkov binary.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

CHECKOV_VERSION = "3.3.30"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pitrflow-tools"


def checkov() -> Path:
    """The checkov executable: $PITRFLOW_CHECKOV, else the pinned one in its own venv."""
    if os.environ.get("PITRFLOW_CHECKOV"):
        return Path(os.environ["PITRFLOW_CHECKOV"])
    venv = _cache_root() / f"checkov-{CHECKOV_VERSION}"
    binary, complete = venv / "bin" / "checkov", venv / ".complete"
    if complete.exists():
        return binary
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pytest runs at once build it once
        if not complete.exists():  # a venv interrupted half-way has no marker: rebuilt
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", f"checkov=={CHECKOV_VERSION}"],
                           check=True, timeout=900)
            complete.touch()
    return binary
