"""The pacer is never left busy by an exception, wherever it lands.

An exception from a Python signal handler (Ctrl-C on trio, a test timeout's SIGALRM) can
land at any bytecode of the pacer, in the caller that waits or in the one that wakes it. A
pacer left holding a place nobody holds would keep every later spawn of its thread waiting,
in this run of the event loop and, were the pacer shared by the runs of a thread, in the
next ones: the next test of a pytest session, say.

The sweep raises ``Interrupt`` before one bytecode of ``_pacing.py`` after another, while
six callers contend for turns (the budget is zero: each waits for the loop to turn), one
position per run. Then:

- in the same run, more callers get their turns and the pacer ends idle; except when the
  exception lands on the way into ``Pacer.leave()``, before its first step (the call in
  ``paced``'s ``finally``, the lines of ``leave`` before its ``try``): nothing can undo
  what that caller holds in this run;
- in the next run of the thread, the same, for every position: each run has a pacer of
  its own.
"""

from __future__ import annotations

import dis
import inspect
import sys
from types import FrameType
from typing import Any

import anyio
import pytest

import anyio_proc._pacing as pacing
from anyio_proc._pacing import Pacer, current_pacer, paced

BACKENDS = [
    pytest.param("asyncio", {}, id="asyncio"),
    pytest.param("asyncio", {"use_uvloop": True}, id="uvloop"),
    pytest.param("trio", {}, id="trio"),
]

# Where no Python version runs a signal handler.
_NOT_CHECKED_FOR_SIGNALS = {
    dis.opmap[name]
    for name in ("NOP", "SETUP_FINALLY", "SETUP_WITH", "BEFORE_ASYNC_WITH", "YIELD_FROM")
    if name in dis.opmap
}


class Interrupt(BaseException):
    """A BaseException, as KeyboardInterrupt and pytest-timeout's failure are."""


class Injector:
    """Raises ``Interrupt`` before the ``target``-th bytecode run in ``_pacing.py``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.where: tuple[str, int] | None = None

    def install(self) -> None:
        # Python 3.12 emits opcode events only if some frame asked for them before
        # settrace() was called.
        sys._getframe().f_trace_opcodes = True
        sys.settrace(self._call)

    @staticmethod
    def remove() -> None:
        sys.settrace(None)

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self.where is None and frame.f_code.co_filename == pacing.__file__:
            frame.f_trace_opcodes = True
            return self._step
        return None

    def _step(self, frame: FrameType, event: str, arg: Any) -> Any:
        # Python 3.13 ignores the request made at the "call" event: repeat it once running.
        frame.f_trace_opcodes = True
        if self.where is not None or event != "opcode":
            return self._step
        if frame.f_code.co_code[frame.f_lasti] in _NOT_CHECKED_FOR_SIGNALS:
            return self._step
        self.count += 1
        if self.count == self.target:
            self.where = (frame.f_code.co_name, frame.f_lineno)
            raise Interrupt
        return self._step


def _lines_before_leave_protects() -> set[tuple[str, int]]:
    """The positions on the way into ``Pacer.leave()``'s retried steps."""
    source, first = _source_lines(Pacer.leave)
    try_line = next(first + i for i, line in enumerate(source) if line.strip() == "try:")
    window = {("leave", line) for line in range(first, try_line)}
    source, first = _source_lines(paced)
    window |= {("paced", first + i) for i, line in enumerate(source) if "pacer.leave(turn)" in line}
    return window


def _source_lines(fn: Any) -> tuple[list[str], int]:
    return inspect.getsourcelines(fn)


WINDOW = _lines_before_leave_protects()


def _work() -> int:
    return 1


async def _contend(callers: int) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(paced, _work)


async def _interrupted_run(injector: Injector, caught: bool) -> bool | None:
    """Six callers contend while ``injector`` strikes; then whether more get their turns
    in this run, the pacer ending idle (None: not to be expected).

    ``caught``: the caller struck catches the exception and the others go on, rather than
    the task group cancelling them all.
    """

    async def call(group: anyio.CancelScope) -> None:
        try:
            await paced(_work)
        except Interrupt:
            if injector.where in WINDOW:
                group.cancel()  # the others may wait for ever: see the module's text

    injector.install()
    with anyio.move_on_after(5) as waited:
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    if caught:
                        tg.start_soon(call, tg.cancel_scope)
                    else:
                        tg.start_soon(paced, _work)
        except BaseException:  # the Interrupt, or the group holding it
            pass
        finally:
            injector.remove()
    if injector.where in WINDOW:
        return None
    return not waited.cancelled_caught and await _paces_again()


async def _paces_again() -> bool:
    with anyio.move_on_after(5):
        await _contend(4)
        pacer = current_pacer()
        return not pacer._line and not pacer._woken and pacer._pauser is None
    return False


def sweep(backend: str, options: dict[str, Any], caught: bool) -> tuple[int, list[str]]:
    """Strike at each position in turn; return how many there were and what went wrong."""
    failures: list[str] = []
    target = 1
    while True:
        pacing._local.pacers.clear()  # each position starts from a new pacer
        injector = Injector(target)
        same_run = anyio.run(
            _interrupted_run, injector, caught, backend=backend, backend_options=options
        )
        if injector.where is None:
            return target - 1, failures
        next_run = anyio.run(_paces_again, backend=backend, backend_options=options)
        if not next_run:
            failures.append(f"{injector.where}: the next run does not pace")
        if same_run is False:
            failures.append(f"{injector.where}: this run does not pace any more")
        target += 1


@pytest.fixture
def no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing, "BUDGET", 0.0)


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize("caught", [False, True], ids=["group_cancelled", "caught"])
@pytest.mark.parametrize(("backend", "options"), BACKENDS)
def test_an_interrupt_at_any_position_leaves_the_pacer_usable(
    no_budget: None, backend: str, options: dict[str, Any], caught: bool
) -> None:
    # (The warning: Python's own window, an interrupt between making a coroutine and
    # awaiting it.)
    positions, failures = sweep(backend, options, caught)
    assert positions > 500  # the sweep reached into the pacer (1700 on Python 3.11)
    assert not failures
