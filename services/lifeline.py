"""No process outlives the ``ticslab up`` that started it, however that launcher dies.

The launcher opens one pipe and keeps its only writing end; every child gets the reading end
(its number in ``TICSLAB_LIFELINE_FD``). When the launcher dies, by any signal (SIGKILL too),
the kernel closes the writing end and each child reads end-of-file: it stops as on SIGTERM, and
is gone within ``GRACE_SECONDS`` even if that shutdown hangs. A child frozen by SIGSTOP cannot
read, so on Linux it also asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``).

A child whose parent cannot hand it a pipe (a browser tab's dashboard, started by textual-serve
through a shell that closes inherited descriptors) follows its parent's pid instead
(``follow_parent_pid``): it is re-parented when that parent dies, however it died.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

ENV = "TICSLAB_LIFELINE_FD"
PARENT_ENV = "TICSLAB_PARENT_PID"  # to see whether the launcher died before prctl took effect
GRACE_SECONDS = 1.5  # SIGTERM's graceful stop, then a hard exit: gone within 2 s
PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 0.5  # a child following its parent's pid notices its end within this


class Lifeline:
    """The launcher's side: the pipe whose reading end its children inherit."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()  # neither inheritable unless passed (PEP 446)

    def env(self) -> dict[str, str]:
        """What a child needs in its environment (with ``pass_fds=(read_fd,)``)."""
        return {ENV: str(self.read_fd), PARENT_ENV: str(os.getpid())}

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def follow_parent() -> None:
    """The child's side, at start: end with the launcher (no-op when not started by one)."""
    fd_text = os.environ.pop(ENV, None)
    parent = os.environ.pop(PARENT_ENV, None)
    if fd_text is None:
        return
    fd = int(fd_text)
    if sys.platform == "linux":
        _die_with_parent()
        if parent is not None and os.getppid() != int(parent):
            os._exit(1)  # the launcher died before the line above took effect
    threading.Thread(target=_wait_for_eof, args=(fd,), name="lifeline", daemon=True).start()


def follow_parent_pid(parent_pid: int) -> None:
    """Exit once ``parent_pid`` is no longer this process's parent, however it ended (it has
    already changed if the parent died first): for a child given no lifeline pipe."""
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="ticslab-web-parent", daemon=True
    ).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # nothing to restore: no terminal, and the output pipe is gone


def _wait_for_eof(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 1):
            pass  # nobody writes: read returns only at end-of-file
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    os._exit(1)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
