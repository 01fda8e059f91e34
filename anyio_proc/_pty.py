"""Pseudo-terminals (POSIX): the child's controlling terminal, and our side of it.

The child runs in a session of its own with the terminal's slave side as its controlling
terminal, so the line discipline does for it what a terminal window does: echo, line
editing, Ctrl-C as SIGINT to the foreground process group, SIGWINCH on resize, SIGHUP when
the terminal goes away. We keep the master side as one bidirectional byte stream.

On Linux, when the other options allow ``posix_spawn``, the child opens the slave by name
right after ``setsid`` (a session leader without a controlling terminal acquires the first
terminal it opens), so no Python code runs between fork and exec; otherwise ``Popen``
runs ``setsid`` and a ``TIOCSCTTY`` hook.
"""

from __future__ import annotations

import codecs
import errno
import math
import os
import re
import struct
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, AnyStr

import anyio
from anyio.abc import ByteStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._os.pipes import set_blocking
from ._status import Output
from ._streams import _READ_SIZE, _YIELD_EVERY, _PipeEnd
from ._taskgroups import unwrap_single

if TYPE_CHECKING:
    from ._child import Child
    from ._command import _Spec
    from ._status import ExitStatus

__all__ = [
    "PtyStream",
    "check_size",
    "launch_pty",
    "open_pty",
    "output_with_terminal",
    "status_with_terminal",
]

_MAX_DIMENSION = 0xFFFF  # struct winsize holds unsigned shorts
_DEFAULT_SIZE = (24, 80)
# How much of the unmatched output an expect() error quotes.
_QUOTED_TAIL = 200
# expect(): the least new output worth a search while reads keep returning data at once.
_SEARCH_STEP = 65536


def check_size(rows: object, cols: object) -> tuple[int, int]:
    """Validate a terminal size; ``(rows, cols)``."""
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 1 <= value <= _MAX_DIMENSION:
            raise ValueError(f"{name} must be between 1 and {_MAX_DIMENSION}, not {value}")
    return rows, cols  # type: ignore[return-value]


def _is_hangup(exc: OSError) -> bool:
    # Linux reads EIO from a master whose slave side is closed everywhere; that is the
    # terminal's end of file, not an error.
    return exc.errno == errno.EIO


if sys.platform == "win32":

    def open_pty(size: tuple[int, int] | None) -> tuple[int, int]:
        raise ValueError("pseudo-terminals (Stdio.PTY, Command.pty) need a POSIX system")

    def launch_pty(
        spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...], slave: int
    ) -> int:
        raise ValueError("pseudo-terminals (Stdio.PTY, Command.pty) need a POSIX system")

    def _set_size(fd: int, rows: int, cols: int) -> None:
        raise ValueError("pseudo-terminals need a POSIX system")

    def _get_size(fd: int) -> tuple[int, int]:
        raise ValueError("pseudo-terminals need a POSIX system")

    def _eof_char(fd: int) -> bytes:
        return b"\x04"

else:
    import fcntl
    import termios

    from ._os import launch as _launch

    def _set_size(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _get_size(fd: int) -> tuple[int, int]:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols, _, _ = struct.unpack("HHHH", packed)
        return rows, cols

    def _eof_char(fd: int) -> bytes:
        try:
            char = termios.tcgetattr(fd)[6][termios.VEOF]
        except (termios.error, IndexError):
            return b"\x04"
        return char if isinstance(char, bytes) and char else b"\x04"

    def open_pty(size: tuple[int, int] | None) -> tuple[int, int]:
        """A new terminal of ``size`` (rows, cols): ``(master, slave)``, both ours and not
        inheritable; the master non-blocking."""
        master, slave = os.openpty()
        try:
            rows, cols = size or _DEFAULT_SIZE
            _set_size(slave, rows, cols)
            set_blocking(master, False)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        return master, slave

    def launch_pty(
        spec: _Spec, env: dict[str, str] | None, stdio: tuple[int | None, ...], slave: int
    ) -> int:
        """Start the child in a new session with ``slave`` as its controlling terminal,
        installed at each stdio position where ``stdio`` names it."""
        if spec.process_group is not None:
            raise ValueError(
                "a child on a pseudo-terminal leads its own session and process group; "
                "process_group() cannot be combined with it"
            )
        spec = replace(spec, new_session=True)
        targets = [target for target, fd in enumerate(stdio) if fd == slave]
        if sys.platform == "linux" and _launch._posix_spawn_can(spec, stdio):
            try:
                return _launch._posix_spawn(spec, env, stdio, terminal=slave)
            except OSError as exc:
                # As in _launch: glibc refuses fds above a lowered RLIMIT_NOFILE (EBADF)
                # before creating anything; Popen gives the real answer.
                if exc.errno != errno.EBADF:
                    raise
        first = targets[0]
        user_hook = spec.pre_exec

        def take_terminal() -> None:
            # Popen has run setsid() and installed stdio by now.
            fcntl.ioctl(first, termios.TIOCSCTTY, 0)
            if user_hook is not None:
                user_hook()

        return _launch.launch(replace(spec, pre_exec=take_terminal), env, stdio)


class PtyStream(_PipeEnd, ByteStream):
    """Our side (the master) of a child's pseudo-terminal: one bidirectional byte stream.

    What is sent is typed at the terminal (the line discipline echoes it and turns Ctrl-C
    into SIGINT, unless the program changed the terminal's modes); what is received is what
    the program wrote, with ``\\n`` shown as ``\\r\\n`` as a terminal does.

    Once the program and everything else holding the terminal have exited,
    :meth:`receive` raises :class:`anyio.EndOfStream` (the ``EIO`` a terminal master
    reads then is not an error). Closing it hangs the terminal up: a program still running
    gets SIGHUP.
    """

    def __init__(self, fd: int) -> None:
        self._init(fd)
        self._grown = True  # a terminal's queues have a fixed size: never try to grow them
        # Received but not yet returned: what expect() did not consume.
        self._buffer = bytearray()
        self._searched = -1  # expect(): the buffer's length at its last search

    # -- reading ---------------------------------------------------------------------------

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        """Return at least one byte of the program's output, waiting until some arrive.

        Data an :meth:`expect` call received but did not consume comes first. Raises
        :class:`anyio.EndOfStream` once the terminal is hung up on the other side.

        **Cancellation:** safe; no data is lost.
        """
        # The shared receive serves the buffer first and checks max_bytes as anyio does.
        return await self._receive(max_bytes)

    def _read_error(self, exc: OSError) -> Exception:
        # Linux reads EIO from a master whose slave side is closed everywhere: that is the
        # terminal's end of file, not an error.
        return anyio.EndOfStream() if _is_hangup(exc) else anyio.BrokenResourceError()

    async def expect(
        self,
        pattern: AnyStr | re.Pattern[AnyStr],
        *,
        timeout: float | None = None,
        encoding: str = "utf-8",
    ) -> re.Match[AnyStr]:
        """Wait until the program's output matches ``pattern``; return the match.

        ``pattern`` is a regular expression (``bytes``, ``str`` or compiled). A ``str``
        pattern is matched against the output decoded with ``encoding`` (bytes that do not
        decode are kept as surrogate escapes). Output up to the end of the match is
        consumed (``match.string[:match.start()]`` is what came before it); what follows
        stays buffered for the next ``expect`` or :meth:`receive`.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass without a match, and
        :class:`anyio.EndOfStream` when the terminal is hung up first; the unmatched output
        stays buffered either way, and both messages quote its end.

        **Cancellation:** safe; nothing received is lost.
        """
        compiled: re.Pattern[AnyStr]
        if isinstance(pattern, re.Pattern):
            compiled = pattern
        elif isinstance(pattern, (str, bytes)):
            compiled = re.compile(pattern)
        else:
            raise TypeError(
                f"expect() takes a str or bytes pattern (or a compiled one), "
                f"not {type(pattern).__name__}"
            )
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
            if math.isnan(timeout) or timeout < 0:
                raise ValueError(f"timeout must be >= 0, not {timeout}")
        codecs.lookup(encoding)  # an unknown encoding fails now, not after the output came
        if self._busy:
            raise anyio.BusyResourceError("reading from")
        await checkpoint_if_cancelled()
        self._busy = True
        match = None
        waited = False
        try:
            with anyio.move_on_after(timeout):
                match, waited = await self._read_until(compiled, encoding)
            if match is None:
                # The deadline passed at a checkpoint between two searches: what arrived
                # before it still counts.
                match = self._search_new(compiled, encoding)
        finally:
            self._busy = False
        if match is not None:
            if not waited:
                # Never had to wait: still let other tasks run, as a checkpoint must.
                await cancel_shielded_checkpoint()
            return match
        raise TimeoutError(
            f"{compiled.pattern!r} did not match within {timeout:g} s; "
            f"unmatched output ends with {self._tail()!r}"
        )

    async def _read_until(
        self, compiled: re.Pattern[AnyStr], encoding: str
    ) -> tuple[re.Match[AnyStr], bool]:
        """Read into the buffer until ``compiled`` matches it; ``(match, whether it waited
        or yielded)``.

        Searching the whole buffer after every read would be quadratic in the output of a
        program that writes faster than we read (megabytes before a prompt). So while reads
        return data at once, the buffer is searched again only once it has doubled (or
        grown by ``_SEARCH_STEP``): the total searched stays within a few times the output.
        It is always searched before waiting for more (the program may be waiting for us)
        and at end of file. Cancellation loses nothing: each read lands in the buffer
        before the next await.
        """
        self._searched = -1
        waited = False
        immediate = 0
        while True:
            grown = len(self._buffer) - self._searched
            due = self._searched < 0 or grown >= max(self._searched, _SEARCH_STEP)
            if due and (match := self._search_new(compiled, encoding)) is not None:
                return match, waited
            try:
                data = self._read_now(_READ_SIZE)
            except anyio.EndOfStream:
                if (match := self._search_new(compiled, encoding)) is not None:
                    return match, waited
                raise anyio.EndOfStream(
                    f"the terminal was hung up before {compiled.pattern!r} matched; "
                    f"unmatched output ends with {self._tail()!r}"
                ) from None
            if data is None:
                if (match := self._search_new(compiled, encoding)) is not None:
                    return match, waited
                await anyio.wait_readable(self._fd)
                waited = True
                immediate = 0
                continue
            self._buffer += data
            immediate += 1
            if immediate == _YIELD_EVERY:
                # A program writing faster than we read never makes us wait: yield now
                # and then, or nothing else runs and the timeout never fires.
                immediate = 0
                await checkpoint()
                waited = True

    def _search_new(self, compiled: re.Pattern[AnyStr], encoding: str) -> re.Match[AnyStr] | None:
        """Search the buffer if it changed since the last search."""
        if len(self._buffer) == self._searched:
            return None
        match = self._search(compiled, encoding)
        self._searched = len(self._buffer)
        return match

    def _search(self, compiled: re.Pattern[AnyStr], encoding: str) -> re.Match[AnyStr] | None:
        if isinstance(compiled.pattern, bytes):
            data = bytes(self._buffer)
            match = compiled.search(data)
            if match is not None:
                del self._buffer[: match.end()]
            return match
        # An incomplete multi-byte character at the end waits for the rest of its bytes.
        decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
        text = decoder.decode(bytes(self._buffer), final=False)
        match = compiled.search(text)
        if match is not None:
            consumed = len(text[: match.end()].encode(encoding, "surrogateescape"))
            del self._buffer[:consumed]
        return match

    def _tail(self) -> bytes:
        return bytes(self._buffer[-_QUOTED_TAIL:])

    # -- writing ---------------------------------------------------------------------------

    async def send(self, item: bytes) -> None:
        """Type ``item`` at the terminal, waiting while its input queue is full.

        Raises :class:`anyio.BrokenResourceError` when the terminal is gone, and
        :class:`anyio.ClosedResourceError` once this stream is closed.

        **Cancellation:** part of ``item`` may have been written.
        """
        await self._send(item)

    async def send_eof(self) -> None:
        """Type the terminal's end-of-file character (Ctrl-D unless changed).

        A terminal has no half-close: a program reading lines sees end-of-file when this
        comes at the start of a line (send ``b"\\n"`` first otherwise).
        """
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        await self.send(_eof_char(fd))

    # -- the terminal ----------------------------------------------------------------------

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal's size; the program's foreground process group gets SIGWINCH."""
        rows, cols = check_size(rows, cols)
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        _set_size(fd, rows, cols)

    @property
    def size(self) -> tuple[int, int]:
        """The terminal's size, ``(rows, cols)``."""
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        return _get_size(fd)

    async def aclose(self) -> None:
        """Close our side; a program still attached gets SIGHUP, as when a terminal window
        closes."""
        self._close()
        self._buffer.clear()
        await checkpoint()


# -- Command.output() and Command.status() of a command on a terminal --------------------
#
# Nobody else reads the terminal for these two, and the program blocks once it has written
# what the terminal's queue holds (a few KiB): they read it themselves. Nobody can type at
# it either, so when stdin is on it they type end-of-file once, as `script` does when its
# own input ends: a program reading its terminal ends instead of waiting forever.


async def _type_end_of_file(pty: PtyStream) -> None:
    try:
        await pty.send_eof()
    except anyio.BrokenResourceError:
        pass  # the program has gone already, and took the terminal with it


async def output_with_terminal(child: Child, on_terminal: tuple[bool, bool, bool]) -> Output:
    """:meth:`Command.output` for a child with streams on a terminal; ``on_terminal`` says
    which of stdin, stdout and stderr are.

    The terminal is read to its end of file (every process holding it has exited, as for
    a pipe) while the pipes are read and the child is waited for. What it carried is
    ``stdout`` when stdout is on it, else ``stderr`` when stderr is (a terminal merges
    both into one stream); output of a terminal that carries neither (only stdin) is
    discarded.

    **Cancellation:** as :meth:`Child.wait_with_output`; the output read so far is lost.
    """
    pty = child.pty
    assert pty is not None
    stdin_on, stdout_on, stderr_on = on_terminal
    chunks: list[bytes] = []
    with unwrap_single():
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain_terminal, pty, chunks)
            if stdin_on:
                await _type_end_of_file(pty)
            piped = await child.wait_with_output()
    terminal = b"".join(chunks)
    return Output(
        piped.status,
        terminal if stdout_on else piped.stdout,
        terminal if stderr_on and not stdout_on else piped.stderr,
    )


async def status_with_terminal(child: Child, stdin_on_terminal: bool) -> ExitStatus:
    """:meth:`Command.status` for a child with streams on a terminal: what the program
    writes there is read and discarded until it exits.

    **Cancellation:** as :meth:`Child.wait`: the child is left to the block's exit policy.
    """
    pty = child.pty
    assert pty is not None
    with unwrap_single():
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain_terminal, pty, None)
            if stdin_on_terminal:
                await _type_end_of_file(pty)
            status = await child.wait()
            tg.cancel_scope.cancel()  # returns at exit, as wait() does, not at end of file
    return status


async def _drain_terminal(pty: PtyStream, chunks: list[bytes] | None) -> None:
    """Read the terminal to its end of file, keeping what it says in ``chunks`` (if any),
    so a program writing more than the terminal buffers never blocks."""
    while True:
        try:
            data = await pty.receive()
        except anyio.EndOfStream:
            return
        if chunks is not None:
            chunks.append(data)
