"""Windows: wait on the process handle.

Not run on this project's CI (Linux); type-checked with ``mypy --platform win32``. The
wait occupies a worker thread only while a task is actually waiting, and a cancelled wait
abandons its thread, which ends when the process does.
"""

from __future__ import annotations

import sys

import anyio.to_thread

from .base import ExitWaiter

assert sys.platform == "win32"

import _winapi  # noqa: E402

__all__ = ["WindowsWaiter"]

_SYNCHRONIZE = 0x00100000
_PROCESS_TERMINATE = 0x0001
_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000


class WindowsWaiter(ExitWaiter):
    def __init__(self, pid: int) -> None:
        self.pid = pid
        # Our own handle: the pid cannot be reused while any handle to the process is open.
        self._handle = _winapi.OpenProcess(
            _SYNCHRONIZE | _PROCESS_TERMINATE | _PROCESS_QUERY_LIMITED_INFORMATION, False, pid
        )

    def poll(self, *, reap: bool) -> int | None:
        if _winapi.WaitForSingleObject(self._handle, 0) != _winapi.WAIT_OBJECT_0:
            return None
        return _winapi.GetExitCodeProcess(self._handle)

    async def wait(self) -> None:
        await anyio.to_thread.run_sync(
            _winapi.WaitForSingleObject, self._handle, _winapi.INFINITE, abandon_on_cancel=True
        )

    def send_signal(self, sig: int) -> None:
        # Windows has no signals for other processes; every request terminates, as
        # subprocess.Popen.send_signal does for SIGTERM.
        if self.poll(reap=False) is None:
            _winapi.TerminateProcess(self._handle, 1)

    def close(self) -> None:
        _winapi.CloseHandle(self._handle)

    def abandon(self) -> None:
        # Nothing to reap on Windows: dropping our handle lets the system free the process.
        self.close()
