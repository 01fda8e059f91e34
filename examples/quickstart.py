"""anyio_proc in one minute: talk to a child, capture output, and never leak a process.

Run it with ``python examples/quickstart.py`` (asyncio) or add ``trio`` / ``uvloop``.
"""

from __future__ import annotations

import sys
import time

import anyio

from anyio_proc import Command, ProcessFailed, spawn

PY = sys.executable


async def main() -> None:
    # 1. A conversation: write to stdin, read lines from stdout, get the exit status.
    grep = Command("grep", "-n", "error").stdin_piped().stdout_piped()
    async with spawn(grep) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        await child.stdin.send(b"all good\nerror: disk full\nfine\nerror: again\n")
        await child.stdin.aclose()
        async for line in child.stdout.lines():
            print(f"  grep says {line!r}")
        print(f"1. grep (pid {child.pid}) ended with {await child.wait()}")

    # 2. Run to completion and capture everything; check() turns failure into an error.
    out = await Command(PY, "-c", "print('hello from a child')").output()
    print(f"2. captured {out.stdout!r}, {out.status}")
    try:
        (await Command(PY, "-c", "import sys; sys.exit('boom')").output()).check()
    except ProcessFailed as exc:
        print(f"   failure reported as: {str(exc).splitlines()[-1].strip()!r}")

    # 3. A timeout cancels the block: the child gets SIGTERM and is reaped before we go on.
    started = time.monotonic()
    with anyio.move_on_after(0.5):
        async with spawn(Command("sleep", "3600")) as sleeper:
            await sleeper.wait()
    print(
        f"3. sleeper stopped by timeout after {time.monotonic() - started:.2f} s: "
        f"{sleeper.try_wait()} (reaped, no zombie)"
    )

    # 4. Many children at once, bounded concurrency, nothing left behind.
    limiter = anyio.CapacityLimiter(16)
    statuses: list[int] = []

    async def run_one(n: int) -> None:
        async with limiter:
            statuses.append(await Command(PY, "-c", f"import sys; sys.exit({n % 3})").status())

    async with anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(run_one, n)
    print(f"4. 30 children, exit codes seen: {sorted({int(s) for s in statuses})}")


if __name__ == "__main__":
    choice = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    backend, options = {
        "asyncio": ("asyncio", {}),
        "uvloop": ("asyncio", {"use_uvloop": True}),
        "trio": ("trio", {}),
    }[choice]
    print(f"anyio_proc quickstart on {choice}")
    anyio.run(main, backend=backend, backend_options=options)
