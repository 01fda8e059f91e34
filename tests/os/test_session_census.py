"""Sessions at scale: the exit policies of many session leaders share censuses of ``/proc``.

A child started with ``new_session()`` (or on a terminal) leads a session, whose other
process groups (a shell's jobs) the exit policy signals and waits for. Each session used to
list ``/proc`` for itself, in the event loop's thread, at every step: shutting down 500 took
4 s of the loop's time. Now the policy reads censuses shared with every other session and
group being stopped, taken in a worker thread; a user's own ``kill()`` still lists ``/proc``
there and then.
"""

from __future__ import annotations

import shutil
import sys
import threading

import anyio
import pytest

from anyio_proc import Command, spawn

from ..helpers import alive, poll_until

if sys.platform != "linux":
    pytest.skip("the census lists /proc, which is Linux's", allow_module_level=True)

import anyio_proc._os.census as census
import anyio_proc._os.groups as groups
import anyio_proc._os.session as session

pytestmark = pytest.mark.anyio

# A session leader with a job in a process group of its own (out of reach of the killpg
# that stops the leader's group), which SIGTERM ends.
LEADER = (
    "import os, signal, sys\n"
    "job = os.posix_spawn(sys.argv[1], ['sleep', '60'], os.environ, setpgroup=0,\n"
    "                     setsigdef={signal.SIGTERM})\n"
    "print(job, flush=True)\n"
    "signal.pause()\n"
)


@pytest.fixture
def listings_in_loop_thread(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every listing of ``/proc`` made in this (the event loop's) thread, by whom."""
    loop_thread = threading.current_thread()
    made: list[str] = []
    real = census.take_census

    def spy(by: str) -> census.Census:
        if threading.current_thread() is loop_thread:
            made.append(by)
        return real()

    for module in (census, groups, session):
        monkeypatch.setattr(module, "take_census", lambda by=module.__name__: spy(by))
    return made


async def test_many_sessions_with_jobs_are_stopped_from_censuses_off_the_loop(
    listings_in_loop_thread: list[str],
) -> None:
    count = 20
    sleep = shutil.which("sleep")
    assert sleep is not None
    cmd = Command(sys.executable, "-c", LEADER, sleep).stdout_piped().new_session()
    jobs: list[int] = []
    all_started = anyio.Event()

    async def one() -> None:
        async with spawn(cmd) as child:
            assert child.stdout is not None
            async for line in child.stdout.lines():
                jobs.append(int(line))
                break
            if len(jobs) == count:
                all_started.set()
            await anyio.sleep_forever()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
            await all_started.wait()
            assert all(alive(job) for job in jobs)
            tg.cancel_scope.cancel()  # every block ends at once
    # Each job got the shutdown signal from its session's policy (SIGTERM, which a job
    # out of its leader's group gets from nothing else), and no step listed /proc in the
    # event loop's thread.
    assert [job for job in jobs if alive(job)] == []
    assert listings_in_loop_thread == []


async def test_a_users_kill_reaches_the_jobs_of_the_session_at_once() -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    cmd = Command(sys.executable, "-c", LEADER, sleep).stdout_piped().new_session()
    async with spawn(cmd) as child:
        assert child.stdout is not None
        async for line in child.stdout.lines():
            job = int(line)
            break
        assert alive(job)
        child.kill()  # synchronous: the session is listed there and then
        # SIGKILL was sent to the job; it is gone (or a zombie) once the kernel is done.
        await poll_until(lambda: not alive(job))
