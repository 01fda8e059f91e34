"""The Child's state machine, on its own: no process, no event loop."""

from __future__ import annotations

import pytest

from anyio_proc import ExitStatus
from anyio_proc._lifecycle import Lifecycle, PolicyState, ProcessState


def exited(code: int = 0) -> ExitStatus:
    return ExitStatus(code, args=("prog",))


# Read through functions: a type checker would otherwise take the state it saw asserted for
# one that no call can change.
def process_of(state: Lifecycle) -> ProcessState:
    return state.process


def policy_of(state: Lifecycle) -> PolicyState:
    return state.policy


def test_a_new_child_is_running_with_its_policy_open() -> None:
    state = Lifecycle()
    assert process_of(state) is ProcessState.RUNNING
    assert policy_of(state) is PolicyState.OPEN
    assert state.running
    assert not state.reaped
    assert not state.closed
    assert state.status is None
    assert not state.waiter_releasable


def test_an_exit_reaped_at_once_goes_straight_to_reaped() -> None:
    state = Lifecycle()
    state.exited(exited(3), reaped=True)
    assert process_of(state) is ProcessState.REAPED
    assert state.status == 3
    assert state.waiter_releasable


def test_a_kept_zombie_is_exited_until_reaped() -> None:
    state = Lifecycle()
    state.exited(exited(-9), reaped=False)
    assert process_of(state) is ProcessState.EXITED
    assert not state.running
    assert not state.reaped
    assert not state.waiter_releasable  # the zombie pins the group: the waiter must stay
    state.reaped_now()
    assert process_of(state) is ProcessState.REAPED
    assert state.status == -9


def test_an_exit_cannot_be_recorded_twice_nor_a_running_child_reaped() -> None:
    state = Lifecycle()
    with pytest.raises(RuntimeError, match="running process cannot be reaped"):
        state.reaped_now()
    state.exited(exited(), reaped=False)
    with pytest.raises(RuntimeError, match="exit recorded twice"):
        state.exited(exited(1), reaped=True)
    assert state.status == 0


def test_the_waiter_outlives_every_wait_in_progress() -> None:
    state = Lifecycle()
    state.enter_wait()
    state.enter_wait()
    state.exited(exited(), reaped=True)
    assert not state.waiter_releasable
    state.leave_wait()
    assert not state.waiter_releasable
    state.leave_wait()
    assert state.waiter_releasable
    with pytest.raises(RuntimeError, match="without enter_wait"):
        state.leave_wait()


def test_only_one_caller_claims_the_policy() -> None:
    state = Lifecycle()
    assert state.claim()
    assert policy_of(state) is PolicyState.CLOSING
    assert state.closed
    assert not state.claim()
    assert not state.close_quietly()
    state.finish()
    assert policy_of(state) is PolicyState.CLOSED
    assert not state.claim()
    with pytest.raises(RuntimeError, match="finish"):
        state.finish()


def test_closing_quietly_takes_the_place_of_a_policy() -> None:
    state = Lifecycle()
    state.exited(exited(), reaped=True)
    assert state.close_quietly()
    assert policy_of(state) is PolicyState.CLOSED
    assert not state.claim()
    with pytest.raises(RuntimeError, match="finish"):
        state.finish()


def test_the_process_and_the_policy_move_independently() -> None:
    # An exit during the grace period, a policy begun after an exit: any order holds.
    for exit_first in (True, False):
        state = Lifecycle()
        if exit_first:
            state.exited(exited(), reaped=False)
        assert state.claim()
        if not exit_first:
            state.exited(exited(), reaped=False)
        state.reaped_now()
        state.finish()
        assert (state.process, state.policy) == (ProcessState.REAPED, PolicyState.CLOSED)
    assert "reaped" in repr(state)
    assert "closed" in repr(state)
