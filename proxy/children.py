"""Child processes that end with their parent: no comparison process or worker outlives the process that
started it, however that one ends.

A parent that exits cleanly stops its children itself; one killed outright (SIGKILL, the
OOM killer) cannot. Linux's parent-death signal covers that case: the kernel sends the
child a signal when its parent goes. Where there is no prctl (not Linux), children end as
before, when their parent stops them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """In a child process: receive `sig` when the parent exits. Call it first thing in the child."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    prctl = getattr(ctypes.CDLL(libc_name, use_errno=True), "prctl", None)
    if prctl is None or prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent went before prctl took effect
        os.kill(os.getpid(), sig)
