"""What ``anyio-proc`` prints: each line with the time and the service's name, coloured."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._events import OutputLine, ServiceEvent

__all__ = ["SYSTEM", "Printer", "use_color"]

# foreman's palette, in its order: distinct on dark and light terminals alike.
_COLORS = ("36", "33", "32", "35", "31", "34", "96", "93", "92", "95", "91", "94")
#: The name on the lines anyio-proc writes about the whole run.
SYSTEM = "system"


def use_color(choice: str, stream: TextIO) -> bool:
    """Whether to colour, for ``--color`` ``choice`` (``auto``: on a terminal)."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):  # https://no-color.org: set and not empty
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except ValueError:
        return False


class Printer:
    """Writes ``HH:MM:SS name | line``, names aligned, each name in its own colour."""

    def __init__(self, names: Sequence[str], *, color: bool, stream: TextIO) -> None:
        self._stream = stream
        self._color = color
        self._width = max(len(n) for n in [*names, SYSTEM])
        self._codes = {n: _COLORS[i % len(_COLORS)] for i, n in enumerate(names)}

    def __call__(self, name: str, text: str, *, sep: str = "|") -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self._width}} {sep} "
        if self._color:
            code = self._codes.get(name, "1")  # system messages in bold
            prefix = f"\x1b[{code}m{prefix}\x1b[0m"
        try:
            self._stream.write(prefix + text + "\n")
            self._stream.flush()
        except BrokenPipeError:
            pass  # `anyio-proc start | head`: the reader left; the services still stop cleanly

    def output(self, record: OutputLine) -> None:
        self(record.service, record.line)

    def event(self, event: ServiceEvent) -> None:
        text = f"failed: {event.message}" if event.kind == "failed" else str(event)
        if event.kind == "exited" and event.escalated:
            text += " (--timeout gives it longer)"
        # '*' rather than '|': what anyio-proc says about a service, not what it printed.
        self(event.service, text, sep="*")

    def system(self, text: str) -> None:
        """A line about the whole run (a signal received, the others being stopped)."""
        self(SYSTEM, text, sep="*")
