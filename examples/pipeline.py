"""Pipelines: processes joined by OS pipes, as a shell joins them (docs/pipelines.md).

Run it with ``python examples/pipeline.py`` (asyncio) or add ``trio`` / ``uvloop``.
"""

from __future__ import annotations

import sys
import tempfile

import anyio

from anyio_proc import Command, spawn

TEXT = b"the cat sat on the mat and the dog sat on the log\n"


async def main() -> None:
    # 1. Run to completion: a here-document in, the last stage's stdout captured.
    words = (
        Command("tr", "-s", " ", "\n")
        | Command("sort")
        | Command("uniq", "-c")
        | Command("sort", "-rn")
        | Command("head", "-n", "3")
    )
    out = await words.stdin_bytes(TEXT).output()
    top = [line.split() for line in out.stdout.decode().splitlines()]
    print(f"1. the three most frequent words: {top} ({out.status})")
    assert top[0] == ["4", "the"], top

    # 2. Talk to it: the pipeline's stdin is the first process's, its stdout the last's.
    pipeline = (Command("grep", "error") | Command("sort", "-u")).stdin_piped().stdout_piped()
    async with spawn(pipeline) as p:
        assert p.stdin is not None
        assert p.stdout is not None
        await p.stdin.send(b"error: disk full\nok\nerror: again\nerror: disk full\n")
        await p.stdin.aclose()
        errors = [line async for line in p.stdout.lines()]
        status = await p.wait()
    print(f"2. pids {p.pids} gave {errors}, {status}")
    assert errors == ["error: again", "error: disk full"], errors

    # 3. The exit status: with pipefail (the default), the last stage that failed.
    failing = await (Command("false") | Command("true")).status()
    print(f"3. false | true: {failing}, each stage: {[str(s) for s in failing.statuses]}")
    assert not failing.success
    # A producer stopped by SIGPIPE when the consumer is done early: expected here.
    first = await (Command("yes") | Command("head", "-n", "1")).pipefail(False).output()
    print(f"   yes | head -n 1 without pipefail: {first.stdout!r}, {first.status}")
    assert first.status.success

    # 4. Redirections: < file, > file, >> file.
    with tempfile.TemporaryDirectory() as folder:
        source, target = anyio.Path(folder, "in.txt"), anyio.Path(folder, "out.txt")
        await source.write_text("b\na\nb\n")
        await (Command("sort") | Command("uniq")).stdin_file(source).stdout_file(target).status()
        await (Command("echo", "c") | Command("cat")).stdout_file(target, append=True).status()
        result = await target.read_text()
        print(f"4. sort < in.txt | uniq > out.txt, then >> out.txt: {result!r}")
        assert result == "a\nb\nc\n"


if __name__ == "__main__":
    choice = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    backend, options = {
        "asyncio": ("asyncio", {}),
        "uvloop": ("asyncio", {"use_uvloop": True}),
        "trio": ("trio", {}),
    }[choice]
    print(f"anyio_proc pipelines on {choice}")
    anyio.run(main, backend=backend, backend_options=options)
