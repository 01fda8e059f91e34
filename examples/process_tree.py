"""Process groups and trees: how far leaving the block reaches (docs/process-trees.md).

Each part starts a child that starts children of its own, leaves the block, and checks in
/proc that every process it started is gone. Linux (``kill_tree`` and ``die_with_parent``
read /proc and use prctl).

Run it with ``python examples/process_tree.py`` (asyncio) or add ``trio`` / ``uvloop``.
"""

from __future__ import annotations

import sys

import anyio

from anyio_proc import Command, PipeReceiveStream, spawn

PY = sys.executable


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


async def gone(pids: list[int], within: float = 5.0) -> bool:
    """Whether every one of ``pids`` has exited, looking again for up to ``within`` seconds.

    What we did not start is not ours to wait for, so /proc is polled: nothing tells us
    when a grandchild exits.
    """
    pause = 0.02
    for _ in range(int(within / pause)):
        if not any(running(pid) for pid in pids):
            return True
        await anyio.sleep(pause)
    return False


async def pids_from(stdout: PipeReceiveStream | None, count: int) -> list[int]:
    """The first ``count`` lines of a child's stdout, as pids."""
    assert stdout is not None
    pids = []
    async for line in stdout.lines():
        pids.append(int(line))
        if len(pids) == count:
            break
    return pids


async def main() -> None:
    # 1. A process group: the shell and both of its background jobs get the signal.
    group = Command("sh", "-c", "sleep 60 & echo $!; sleep 60 & echo $!; wait")
    async with spawn(group.stdout_piped().process_group(0)) as child:
        jobs = await pids_from(child.stdout, 2)
    print(f"1. process_group(0): sh {child.pid} and its jobs {jobs} gone: {await gone(jobs)}")
    assert await gone(jobs)

    # 2. kill_tree(): also what left the group (setsid) and what ignores SIGTERM.
    escapes = (
        "setsid sleep 60 & echo $!; "  # a session of its own: no group signal reaches it
        "sh -c 'trap \"\" TERM; echo $$; exec sleep 60' & "  # SIGTERM ignored
        "wait"
    )
    # The stubborn one is SIGKILLed after the grace period (shortened here), and a
    # RuntimeWarning says so.
    tree = Command("sh", "-c", escapes).stdout_piped().kill_tree().shutdown(timeout=0.5)
    with anyio.fail_after(10):
        async with spawn(tree) as child:
            descendants = await pids_from(child.stdout, 2)
    print(
        f"2. kill_tree(): the setsid one and the stubborn one {descendants} gone: "
        f"{await gone(descendants)} (SIGKILL needed: {child.escalated})"
    )
    assert await gone(descendants)

    # 3. die_with_parent(): the child goes when its parent dies, even of SIGKILL, when no
    #    exit hook runs. The parent here is a small program of ours, killed outright.
    parent_program = (
        "import anyio, sys\n"
        "from anyio_proc import Command\n"
        "async def main():\n"
        "    child = await Command('sleep', '60').die_with_parent().spawn()\n"
        "    print(child.pid, flush=True)\n"
        "    await anyio.sleep(60)\n"
        "anyio.run(main)\n"
    )
    async with spawn(Command(PY, "-c", parent_program).stdout_piped()) as parent:
        (orphan,) = await pids_from(parent.stdout, 1)
        parent.kill()  # SIGKILL: the parent cannot clean anything up
        await parent.wait()
    print(
        f"3. die_with_parent(): sleep {orphan} gone with its SIGKILLed parent: "
        f"{await gone([orphan])}"
    )
    assert await gone([orphan])


if __name__ == "__main__":
    choice = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    backend, options = {
        "asyncio": ("asyncio", {}),
        "uvloop": ("asyncio", {"use_uvloop": True}),
        "trio": ("trio", {}),
    }[choice]
    print(f"anyio_proc process trees on {choice}")
    anyio.run(main, backend=backend, backend_options=options)
