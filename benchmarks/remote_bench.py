#!/usr/bin/env python3
"""What a remote child costs: ``anyio_proc.remote`` against plain ``ssh`` and asyncssh.

Against any host you can reach with ``ssh`` without a prompt (the numbers in docs/remote.md
come from the test server of tests/remote, on 127.0.0.1)::

    python benchmarks/remote_bench.py HOST [--config FILE] [--port N] [--n 50]
    python benchmarks/remote_bench.py HOST --backend trio

Rows, each the median of ``--n`` runs (the spread is the 10th-90th percentile):

- ``connect``: entering and leaving ``ssh_host()``: the master, its agent, the cleanup;
- ``spawn+wait (warm)``: ``await host.status(["true"])`` on an open host;
- ``ssh host true``: a new ``ssh`` process and connection each time, the usual way;
- ``mux session``: ``ssh -S socket host true`` on a warm master, without our wrapper:
  the floor of any design over OpenSSH multiplexing;
- ``asyncssh run``: ``conn.run("true")`` on an open asyncssh connection, if asyncssh is
  importable (``pip install asyncssh``; it reads the same ``--config``);
- ``100 MiB through cat``: each way at once, MiB/s;
- ``shut down 100``: leaving a host block with 100 remote ``sleep`` still running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

import anyio

from anyio_proc import Command
from anyio_proc.remote import ssh_host

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

MiB = 1 << 20


def _ssh_base(args: argparse.Namespace) -> list[str]:
    base = ["ssh", "-o", "BatchMode=yes", "-T"]
    if args.config:
        base += ["-F", args.config]
    if args.port:
        base += ["-p", str(args.port)]
    return base


def _host(args: argparse.Namespace) -> Any:
    return ssh_host(args.host, port=args.port, config_file=args.config)


def _summary(samples: list[float]) -> str:
    samples = sorted(samples)
    low = samples[len(samples) // 10]
    high = samples[(len(samples) * 9) // 10 - 1 if len(samples) >= 10 else -1]
    return f"{statistics.median(samples) * 1000:8.1f} ms  ({low * 1000:.1f}-{high * 1000:.1f})"


async def _timed(n: int, job: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await job()
        samples.append(time.perf_counter() - started)
    return samples


async def bench_connect(args: argparse.Namespace) -> list[float]:
    async def once() -> None:
        async with _host(args):
            pass

    return await _timed(max(5, args.n // 5), once)


async def bench_warm(args: argparse.Namespace) -> list[float]:
    async with _host(args) as host:
        await host.status(["true"])
        return await _timed(args.n, lambda: host.status(["true"]))


def bench_plain_ssh(args: argparse.Namespace) -> list[float]:
    samples = []
    for _ in range(max(5, args.n // 5)):
        started = time.perf_counter()
        subprocess.run([*_ssh_base(args), args.host, "true"], check=True)
        samples.append(time.perf_counter() - started)
    return samples


def bench_mux(args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "c")
        master = subprocess.Popen(
            [*_ssh_base(args), "-o", "ControlMaster=yes", "-S", control, "-N", args.host]
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(control):
                if master.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the master connection did not open")
                time.sleep(0.01)
            samples = []
            for _ in range(args.n):
                started = time.perf_counter()
                subprocess.run(
                    [*_ssh_base(args), "-S", control, "-o", "ControlMaster=no", args.host, "true"],
                    check=True,
                )
                samples.append(time.perf_counter() - started)
            return samples
        finally:
            master.terminate()
            master.wait()


async def bench_asyncssh(args: argparse.Namespace) -> list[float] | None:
    try:
        import asyncssh  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    options: dict[str, Any] = {}
    if args.config:
        options["config"] = [args.config]
    if args.port:
        options["port"] = args.port
    async with asyncssh.connect(args.host, **options) as conn:
        await conn.run("true", check=True)
        return await _timed(args.n, lambda: conn.run("true", check=True))


async def bench_throughput(args: argparse.Namespace) -> float:
    chunk = b"x" * MiB
    async with _host(args) as host:
        cat = Command("cat").stdin_piped().stdout_piped()
        async with host.spawn(cat) as child:
            assert child.stdin is not None
            assert child.stdout is not None
            stdin, stdout = child.stdin, child.stdout
            started = time.perf_counter()
            received = 0

            async def feed() -> None:
                for _ in range(100):
                    await stdin.send(chunk)
                await stdin.aclose()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                async for data in stdout:
                    received += len(data)
            elapsed = time.perf_counter() - started
            await child.wait()
    assert received == 100 * MiB
    return 100 / elapsed


async def bench_shutdown(args: argparse.Namespace) -> float:
    async with _host(args) as host:
        for _ in range(100):
            await host.spawn(Command("sleep", "1000"))
        started = time.perf_counter()
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    print(f"host {args.host}, backend {args.backend}, n={args.n}")
    print(f"| {'what':<24} | {'median (p10-p90)':<28} |")
    print(f"|{'-' * 26}|{'-' * 30}|")

    def row(what: str, value: str) -> None:
        print(f"| {what:<24} | {value:<28} |", flush=True)

    row("connect", _summary(await bench_connect(args)))
    row("spawn+wait (warm)", _summary(await bench_warm(args)))
    row("ssh host true", _summary(await anyio.to_thread.run_sync(bench_plain_ssh, args)))
    row("mux session (floor)", _summary(await anyio.to_thread.run_sync(bench_mux, args)))
    asyncssh_samples = await bench_asyncssh(args) if args.backend != "trio" else None
    row("asyncssh run", "not installed" if asyncssh_samples is None else _summary(asyncssh_samples))
    row("100 MiB through cat", f"{await bench_throughput(args):8.0f} MiB/s each way")
    row("shut down 100", f"{await bench_shutdown(args) * 1000:8.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("--config", help="ssh -F file")
    parser.add_argument("--port", type=int)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    parsed = parser.parse_args()
    name, backend_options = parsed.backend, {}
    if name == "uvloop":
        name, backend_options = "asyncio", {"use_uvloop": True}
    anyio.run(main, parsed, backend=name, backend_options=backend_options)
    sys.exit(0)
