from __future__ import annotations

from anyio_proc import Command, spawn


async def test_design_example() -> None:
    cmd = Command("grep", "-n", "error").stdin_piped().stdout_piped()
    async with spawn(cmd) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        await child.stdin.send(b"ok\nerror here\n")
        await child.stdin.aclose()
        lines = [line async for line in child.stdout.lines()]
        status = await child.wait()
    assert lines == ["2:error here"]
    assert status == 0
    assert status.success
