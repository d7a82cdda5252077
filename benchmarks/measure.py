"""What the benchmarks share: starting and stopping the servers they drive, and reading a process's costs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from tests.servers import apt_install


def install_missing(*tools: str) -> None:
    """The Debian tools a benchmark drives, and uvloop (a dependency, but an install made before it was
    one lacks it): the Python baselines run on it, and strangler without it would not be itself."""
    for tool in tools:
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            apt_install(tool)
    if importlib.util.find_spec("uvloop") is None:
        print("installing uvloop (pip)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "uvloop>=0.19"], check=True)


Check = tuple[str, float, str, bool | str]  # a target's row: name, value, target, met (or a word instead)


def print_checks(checks: list[Check]) -> None:
    """Each target's row with its verdict, as every benchmark prints them."""
    for name, value, target, ok in checks:
        verdict = ok if isinstance(ok, str) else "ok" if ok else "MISSED"
        print(f"  {name:<52} {value:>9.2f}   {target:<28} {verdict}")


def run_alone(title: str, measure: Callable[[Path, ExitStack], list[Check]]) -> int:
    """A benchmark that benchmarks.run also runs, run on its own: in a scratch folder of its own, its
    processes stopped at the end, its targets' rows printed."""
    with tempfile.TemporaryDirectory(prefix="strangler-bench-") as scratch, ExitStack() as running:
        print(f"{title}, {time.strftime('%Y-%m-%d %H:%M %Z')}, {machine()}")
        print_checks(measure(Path(scratch), running))
    return 0


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown CPU")
    cores = sum(line.startswith("processor") for line in info)
    return f"{cores} cores ({cpu}), Python {sys.version.split()[0]}"


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and all its descendants (a supervisor's workers)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += cpu_seconds(int(child))
    return total


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def ms(text: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)\b", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
