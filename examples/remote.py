"""Processes on another host, over OpenSSH, with the same structured lifetimes.

    python examples/remote.py [asyncio|uvloop|trio] --host alice@build1
    python examples/remote.py trio --host myserver --config ~/.ssh/config --port 2222

Any host you can ``ssh`` to without a prompt will do (keys or an agent; BatchMode is on).
Without ``--host`` it only says so: there is nothing to connect to.
"""

from __future__ import annotations

import argparse
import signal
import time

import anyio

from anyio_proc import Command
from anyio_proc.remote import ssh_host


async def main(host_name: str, config: str | None, port: int | None) -> None:
    started = time.monotonic()
    async with ssh_host(host_name, config_file=config, port=port) as host:
        print(f"1. connected to {host_name} in {time.monotonic() - started:.2f} s")

        # 2. Arguments arrive exactly as given: no remote shell splits or expands them.
        out = await host.output(Command("printf", "%s|", "two words", "$HOME", "it's"))
        print(f"2. printf saw {out.stdout.decode()!r}")

        # 3. A conversation over the session's pipes, as with a local child.
        cmd = Command("sort").stdin_piped().stdout_piped()
        async with host.spawn(cmd) as child:
            output = await child.wait_with_output(b"pear\napple\nfig\n")
        print(f"3. sort: {output.stdout.decode().split()} ({output.status})")

        # 4. The remote status, signals included (ssh itself would only say 255).
        status = await host.status(Command.shell("kill -TERM $$"))
        assert status.signal == signal.SIGTERM
        print(f"4. a command killed by a signal: {status}")

        # 5. Leaving a block stops the remote process group: the shell and its children.
        tree = Command("sh", "-c", "sleep 1000 & sleep 1000 & wait").shutdown(timeout=2)
        with anyio.move_on_after(0.5):
            async with host.spawn(tree) as child:
                print(f"5. a remote tree, group {child.remote_pgid}; cancelled in 0.5 s")
                await anyio.sleep_forever()
        print(f"   stopped: {child.returncode=}")

        # 6. Many at once: past the server's MaxSessions, the host opens more masters.
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(host.status, Command("sh", "-c", f"exit {i % 2}"))
        print("6. 20 commands at once: done")
    print("7. the host block is over: its masters, agents and commands are gone")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="anyio_proc.remote, shown on one host")
    parser.add_argument("backend", nargs="?", default="asyncio")
    parser.add_argument("--host", help="what ssh takes: user@host, or a Host of your config")
    parser.add_argument("--config", help="an ssh config file (ssh -F)")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.host is None:
        print("examples/remote.py: give --host HOST (see the docstring); nothing to do")
    else:
        name, options = args.backend, {}
        if name == "uvloop":
            name, options = "asyncio", {"use_uvloop": True}
        anyio.run(main, args.host, args.config, args.port, backend=name, backend_options=options)
