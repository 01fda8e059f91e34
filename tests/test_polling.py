"""``poll_until``, the one backoff loop: how the exit policy waits for processes that give
no exit event (group and session members, descendants without a pidfd)."""

from __future__ import annotations

import itertools

import anyio
import pytest

from anyio_proc._polling import poll_until

# An event loop may wake a sleeper a clock tick early.
TICK = 0.001


async def test_done_at_once_returns_without_waiting() -> None:
    calls = []

    def done() -> bool:
        calls.append(anyio.current_time())
        return True

    with anyio.CancelScope() as scope:
        scope.cancel()
        await poll_until(done)
    assert not scope.cancelled_caught  # no checkpoint: the cancelled scope saw nothing
    assert len(calls) == 1


async def test_the_pause_doubles_up_to_the_most() -> None:
    checks: list[float] = []

    def done() -> bool:
        checks.append(anyio.current_time())
        return len(checks) == 6

    await poll_until(done, first=0.02, most=0.04)
    pauses = [later - earlier for earlier, later in itertools.pairwise(checks)]
    for pause, least in zip(pauses, [0.02, 0.04, 0.04, 0.04, 0.04], strict=True):
        assert pause >= least - TICK, pauses
    # Doubling on past `most` would take 0.02 + 0.04 + 0.08 + 0.16 + 0.32 s: capped, it
    # is 0.18 s, and the margin is for a loaded machine.
    assert sum(pauses) < 0.6, pauses


async def test_a_deadline_is_the_callers_cancel_scope() -> None:
    checks = 0

    def never() -> bool:
        nonlocal checks
        checks += 1
        return False

    with anyio.move_on_after(0.05) as scope:
        await poll_until(never, first=0.001, most=0.01)
    assert scope.cancelled_caught
    assert checks >= 2


async def test_an_error_from_the_check_propagates() -> None:
    def broken() -> bool:
        raise LookupError("from the check")

    with pytest.raises(LookupError, match="from the check"):
        await poll_until(broken)
