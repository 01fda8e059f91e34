"""Pseudo-terminals: a child that believes it sits at a terminal (docs/pty.md; POSIX).

Run it with ``python examples/pty_session.py`` (asyncio) or add ``trio`` / ``uvloop``.
"""

from __future__ import annotations

import signal
import sys

import anyio

from anyio_proc import Command, Stdio, spawn

PY = sys.executable
IS_A_TERMINAL = "import sys; print([s.isatty() for s in (sys.stdin, sys.stdout, sys.stderr)])"


async def main() -> None:
    # 1. A whole program on a terminal of its own, run to completion: what it wrote to the
    #    screen comes back as stdout, with the terminal's \r\n line endings.
    out = await Command("sh", "-c", "stty size; tty").pty(rows=30, cols=100).output()
    size, tty = out.stdout.decode().splitlines()
    print(f"1. stty size says {size!r} on {tty}")
    assert size == "30 100", size

    # 2. Only stdout on a terminal (as for a program that colours only terminals); stdin
    #    and stderr stay what the command says.
    out = await Command(PY, "-c", IS_A_TERMINAL).stdout(Stdio.PTY).output()
    print(f"2. stdin, stdout, stderr are terminals: {out.stdout.decode().strip()}")
    assert out.stdout.strip() == b"[False, True, False]", out.stdout

    # 3. A conversation with an interactive program: Python's own REPL.
    repl = Command(PY, "-q", "-i").env("TERM", "dumb").pty(rows=24, cols=80)
    async with spawn(repl) as child:
        assert child.pty is not None
        await child.expect(">>> ", timeout=10)
        await child.pty.send(b"print(6 * 7)\n")
        answer = await child.expect(rb"(\d+)\r\n>>> ", timeout=10)
        print(f"3. the REPL answered {answer[1]!r}")
        # Ctrl-C interrupts what runs in the foreground, as at a real terminal.
        # Typed only once its output shows the line runs: a Ctrl-C that comes while the
        # line editor is still handing the line over can be lost.
        await child.pty.send(b"import time; print('zz' + 'z'); time.sleep(60)\n")
        await child.expect("zzz\r\n", timeout=10)
        await child.pty.send(b"\x03")
        await child.expect("KeyboardInterrupt\r\n>>> ", timeout=10)
        print("   Ctrl-C interrupted time.sleep(60)")
        child.resize(40, 120)  # the program gets SIGWINCH
        await child.pty.send(b"import shutil; shutil.get_terminal_size()\n")
        size_match = await child.expect(r"columns=(\d+), lines=(\d+)\)\r\n>>> ", timeout=10)
        print(f"   after resize: {size_match.groups()}; rows, cols = {child.pty.size}")
        assert size_match.groups() == ("120", "40"), size_match.groups()
        # Ctrl-D at the start of a line, once the prompt is there: the REPL exits. (Typed
        # while the REPL is still busy printing, it can be lost: wait for the prompt.)
        await child.pty.send_eof()
        status = await child.wait()
    print(f"   the REPL ended: {status}")
    assert status.success


if __name__ == "__main__":
    # Started as a background job (`cmd &` in a script), this program would inherit Ctrl-C
    # ignored, and so would the REPL, as POSIX wants: give it the usual Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    choice = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    backend, options = {
        "asyncio": ("asyncio", {}),
        "uvloop": ("asyncio", {"use_uvloop": True}),
        "trio": ("trio", {}),
    }[choice]
    print(f"anyio_proc pseudo-terminals on {choice}")
    anyio.run(main, backend=backend, backend_options=options)
