"""Pseudo-terminals (POSIX): making one, starting a child on it, its size and modes.

The child runs in a session of its own with the terminal's slave side as its controlling
terminal, so the line discipline does for it what a terminal window does: echo, line
editing, Ctrl-C as SIGINT to the foreground process group, SIGWINCH on resize, SIGHUP when
the terminal goes away. We keep the master side (the stream over it is ``PtyStream``, in
``_pty.py``).

On Linux, when the other options allow ``posix_spawn``, the child opens the slave by name
right after ``setsid`` (a session leader without a controlling terminal acquires the first
terminal it opens), so no Python code runs between fork and exec; otherwise ``Popen``
runs ``setsid`` and a ``TIOCSCTTY`` hook.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from .launch import launch
from .pipes import set_blocking
from .posix_spawn import posix_spawn_can, try_posix_spawn

if TYPE_CHECKING:
    from .._spec import Spec

__all__ = [
    "check_size",
    "eof_char",
    "get_size",
    "is_hangup",
    "launch_pty",
    "open_pty",
    "set_size",
]

_MAX_DIMENSION = 0xFFFF  # struct winsize holds unsigned shorts
_DEFAULT_SIZE = (24, 80)
_DEFAULT_EOF = b"\x04"  # Ctrl-D


def check_size(rows: object, cols: object) -> tuple[int, int]:
    """Validate a terminal size; ``(rows, cols)``."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 1 <= value <= _MAX_DIMENSION:
            raise ValueError(f"{name} must be between 1 and {_MAX_DIMENSION}, not {value}")
    return rows, cols  # type: ignore[return-value]


def is_hangup(exc: OSError) -> bool:
    """Whether a read error from the master is the terminal's end of file: Linux reads
    EIO from a master whose slave side is closed everywhere."""
    return exc.errno == errno.EIO


if sys.platform == "win32":

    def open_pty(size: tuple[int, int] | None) -> tuple[int, int]:
        raise ValueError("pseudo-terminals (Stdio.PTY, Command.pty) need a POSIX system")

    def launch_pty(
        spec: Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...], slave: int
    ) -> int:
        raise ValueError("pseudo-terminals (Stdio.PTY, Command.pty) need a POSIX system")

    def set_size(fd: int, rows: int, cols: int) -> None:
        raise ValueError("pseudo-terminals need a POSIX system")

    def get_size(fd: int) -> tuple[int, int]:
        raise ValueError("pseudo-terminals need a POSIX system")

    def eof_char(fd: int) -> bytes:
        return _DEFAULT_EOF

else:
    import fcntl
    import termios

    def set_size(fd: int, rows: int, cols: int) -> None:
        """Set the terminal's size (its foreground process group gets SIGWINCH)."""
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def get_size(fd: int) -> tuple[int, int]:
        """The terminal's size, ``(rows, cols)``."""
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols, _, _ = struct.unpack("HHHH", packed)
        return rows, cols

    def eof_char(fd: int) -> bytes:
        """The character the terminal reads as end of file (Ctrl-D unless changed)."""
        try:
            char = termios.tcgetattr(fd)[6][termios.VEOF]
        except (termios.error, IndexError):
            return _DEFAULT_EOF
        return char if isinstance(char, bytes) and char else _DEFAULT_EOF

    def open_pty(size: tuple[int, int] | None) -> tuple[int, int]:
        """A new terminal of ``size`` (rows, cols): ``(master, slave)``, both ours and not
        inheritable; the master non-blocking."""
        master, slave = os.openpty()
        try:
            rows, cols = size or _DEFAULT_SIZE
            set_size(slave, rows, cols)
            set_blocking(master, False)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return master, slave

    def launch_pty(
        spec: Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...], slave: int
    ) -> int:
        """Start the child in a new session with ``slave`` as its controlling terminal,
        installed at each stdio position where ``stdio`` names it."""
        if spec.process_group is not None:
            raise ValueError(
                "a child on a pseudo-terminal leads its own session and process group; "
                "process_group() cannot be combined with it"
            )
        spec = replace(spec, new_session=True)
        if posix_spawn_can(spec):
            pid = try_posix_spawn(spec, env, stdio, terminal=slave)
            if pid is not None:
                return pid
        first = stdio.index(slave)
        user_hook = spec.pre_exec

        def take_terminal() -> None:
            # Popen has run setsid() and installed stdio by now.
            fcntl.ioctl(first, termios.TIOCSCTTY, 0)
            if user_hook is not None:
                user_hook()

        return launch(replace(spec, pre_exec=take_terminal), env, stdio)
