"""What is running: version, git commit, Python, host; read once at start-up."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from proxy import __version__


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    git_commit: str
    python: str
    host: str
    pid: int
    started_at: float

    @classmethod
    def collect(cls) -> BuildInfo:
        return cls(__version__, _git_commit(), platform.python_version(), socket.gethostname(),
                   os.getpid(), time.time())


def _git_commit() -> str:
    """STRANGLER_GIT_COMMIT if set (for images built without .git), else the checkout's HEAD."""
    if commit := os.environ.get("STRANGLER_GIT_COMMIT"):
        return commit
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"
