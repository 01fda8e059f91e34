"""``anyio-proc run -H host1 -H host2 -- uptime``: the commands on every host at once.

Each host is one :func:`anyio_proc.remote.ssh_host` block, each command one remote child
whose output lines are printed with the host's name (and the command's, when there are
several); Ctrl-C or SIGTERM ends every block, which stops the remote processes. The exit
code says which hosts failed: bit ``i`` (value ``2**i``) is set when the ``i``-th host
given failed, its command failing or the host being unreachable (hosts from the seventh on
share bit 6, 64), and the last line names them.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from anyio_proc import Command, Stdio
from anyio_proc.remote import SSHError, ssh_host

from ._cli_run import shell_line

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from anyio_proc.remote import Host

    from ._cli_output import Printer
    from ._cli_plan import ServiceSpec

__all__ = ["HostFailure", "fan_out", "host_names"]

#: Bits of the exit code, one per host; the last one is shared by the hosts after it.
_HOST_BITS = 7


@dataclass
class HostFailure:
    """Why a host failed: an error (unreachable...) or a command's exit status."""

    host: str
    reason: str


def host_names(hosts: list[str], specs: list[ServiceSpec]) -> list[str]:
    """The names the output lines carry: the host, or ``host/command`` for several."""
    if len(specs) == 1:
        return list(hosts)
    return [f"{host}/{spec.name}" for host in hosts for spec in specs]


def exit_code(hosts: list[str], failures: list[HostFailure]) -> int:
    failed = {f.host for f in failures}
    code = 0
    for index, host in enumerate(hosts):
        if host in failed:
            code |= 1 << min(index, _HOST_BITS - 1)
    return code


async def fan_out(
    hosts: list[str],
    specs: list[ServiceSpec],
    *,
    config_file: str | None,
    timeout: float,
    printer: Printer,
) -> int:
    """Run every command of ``specs`` on every host; the exit code (see the module).

    **Cancellation:** every host's block ends, stopping its remote commands, before the
    cancellation propagates.
    """
    failures: list[HostFailure] = []
    interrupted: list[int] = []
    async with anyio.create_task_group() as tg:
        await tg.start(_on_signals, tg, printer, interrupted)
        async with anyio.create_task_group() as hosts_tg:
            for host in hosts:
                hosts_tg.start_soon(_on_host, host, specs, config_file, timeout, printer, failures)
        tg.cancel_scope.cancel()
    if interrupted:
        return 128 + interrupted[0]
    if failures:
        failures.sort(key=lambda f: hosts.index(f.host))
        printer.system("failed: " + "; ".join(f"{f.host} ({f.reason})" for f in failures))
    return exit_code(hosts, failures)


async def _on_signals(
    tg: TaskGroup, printer: Printer, interrupted: list[int], *, task_status: TaskStatus[None]
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            printer.system(f"{signal.Signals(signum).name} received, stopping every host")
            interrupted.append(signum)
            tg.cancel_scope.cancel()
            return


async def _on_host(
    host: str,
    specs: list[ServiceSpec],
    config_file: str | None,
    timeout: float,
    printer: Printer,
    failures: list[HostFailure],
) -> None:
    try:
        async with (
            ssh_host(host, config_file=config_file) as remote,
            anyio.create_task_group() as tg,
        ):
            for spec in specs:
                name = host if len(specs) == 1 else f"{host}/{spec.name}"
                tg.start_soon(_run_one, remote, name, spec, timeout, printer, failures)
    except (SSHError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        printer(host, f"failed: {first}", sep="*")
        failures.append(HostFailure(host, first.removeprefix(f"{host}: ")))


async def _run_one(
    remote: Host,
    name: str,
    spec: ServiceSpec,
    timeout: float,
    printer: Printer,
    failures: list[HostFailure],
) -> None:
    cmd = (
        Command.shell(shell_line(spec.command))
        .envs(spec.env)
        .stdin(Stdio.NULL)
        .stdout_piped()
        .stderr(Stdio.STDOUT)
        .shutdown(signal.SIGTERM, timeout)
    )
    async with remote.spawn(cmd) as child:
        assert child.stdout is not None
        async for line in child.stdout.lines(errors="replace"):
            printer(name, line)
        status = await child.wait()
    printer(name, f"exited: {status}", sep="*")
    if not status.success:
        failures.append(HostFailure(remote.destination, f"{spec.name}: {status}"))
