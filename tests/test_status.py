"""``ExitStatus``, ``Output`` and ``ProcessFailed`` (DESIGN section 5), as values and as
real children report them."""

from __future__ import annotations

import dataclasses
import pickle
import re
import signal
import subprocess

import anyio
import pytest

from anyio_proc import Command, ExitStatus, Output, ProcessFailed, spawn

from .helpers import py

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)

# -- ExitStatus as a value -------------------------------------------------------------

#: (returncode, code, signal, success, str)
STATUSES = [
    (0, 0, None, True, "exit status: 0"),
    (1, 1, None, False, "exit status: 1"),
    (3, 3, None, False, "exit status: 3"),
    (255, 255, None, False, "exit status: 255"),
    (-9, None, 9, False, "signal: 9 (SIGKILL)"),
    (-15, None, 15, False, "signal: 15 (SIGTERM)"),
    (-6, None, 6, False, "signal: 6 (SIGABRT)"),
    (-13, None, 13, False, "signal: 13 (SIGPIPE)"),
]


def test_exit_status_fields() -> None:
    for returncode, code, sig, success, text in STATUSES:
        status = ExitStatus(returncode)
        assert isinstance(status, int)
        assert status == returncode
        assert int(status) == returncode
        assert hash(status) == hash(returncode)
        assert status.returncode == returncode
        assert type(status.returncode) is int
        assert (status.code, status.signal, status.success) == (code, sig, success), text
        assert str(status) == text


def test_exit_status_is_usable_as_an_int() -> None:
    status = ExitStatus(3)
    assert status + 1 == 4
    assert status != 0
    assert {3: "three"}[status] == "three"
    assert f"{status:d}" == "3"
    assert sorted([ExitStatus(2), ExitStatus(-9), ExitStatus(0)]) == [-9, 0, 2]
    assert bool(ExitStatus(0)) is False  # an int: 0 is falsy; use .success for meaning
    assert ExitStatus(0).success is True


def test_exit_status_repr_shows_fields() -> None:
    text = repr(ExitStatus(-9))
    assert "ExitStatus" in text
    for field, value in [("returncode", "-9"), ("code", "None"), ("signal", "9")]:
        assert re.search(rf"\b{field}\W+{re.escape(value)}\b", text), (field, text)
    assert re.search(r"\bsuccess\W+False\b", text), text
    text = repr(ExitStatus(0))
    assert re.search(r"\bcode\W+0\b", text), text
    assert re.search(r"\bsuccess\W+True\b", text), text


def test_unknown_signal_number_does_not_break_str() -> None:
    status = ExitStatus(-9876543)
    assert status.signal == 9876543
    assert status.code is None
    assert not status.success
    assert "9876543" in str(status)
    assert "9876543" in repr(status)
    failed = ProcessFailed(status, ["prog"])
    assert "9876543" in str(failed)
    assert "prog" in str(failed)
    # Built from a plain int too, as subprocess users would.
    assert "9876543" in str(ProcessFailed(-9876543, ["prog"]))


def test_exit_status_check() -> None:
    ok = ExitStatus(0)
    assert ok.check() is ok
    for returncode in (1, 3, -9):
        status = ExitStatus(returncode)
        with pytest.raises(ProcessFailed) as info:
            status.check()
        assert info.value.returncode == returncode
        assert info.value.status == returncode
        assert isinstance(info.value.status, ExitStatus)
        assert info.value.status.signal == status.signal


def test_exit_status_pickles() -> None:
    for returncode, code, sig, success, _ in [*STATUSES, (-9876543, None, 9876543, False, "")]:
        status = ExitStatus(returncode)
        for protocol in PROTOCOLS:
            copy = pickle.loads(pickle.dumps(status, protocol))
            assert type(copy) is ExitStatus
            assert copy == status
            assert (copy.code, copy.signal, copy.success) == (code, sig, success)
            assert str(copy) == str(status)
            assert repr(copy) == repr(status)


def test_an_unknown_status_says_why_and_keeps_it_through_pickle() -> None:
    elsewhere = ExitStatus.unknown(args=["true"])
    lost = ExitStatus.unknown(args=["true"], why="connection lost")
    assert (elsewhere.why, lost.why, ExitStatus(0).why) == (
        "reaped elsewhere",
        "connection lost",
        None,
    )
    assert str(elsewhere) == "exit status: unknown (reaped elsewhere)"
    assert str(lost) == "exit status: unknown (connection lost)"
    for protocol in PROTOCOLS:
        copy = pickle.loads(pickle.dumps(lost, protocol))
        assert (copy.known, copy.why, str(copy)) == (False, "connection lost", str(lost))
    with pytest.raises(
        ProcessFailed, match=r"^Command `true`: its exit status is unknown \(connection lost\)$"
    ):
        lost.check()
    with pytest.raises(ProcessFailed, match="was reaped elsewhere; its exit status is unknown"):
        elsewhere.check()


# -- Output ----------------------------------------------------------------------------


def test_output_fields_and_frozen() -> None:
    out = Output(ExitStatus(0), b"out", b"err")
    assert (out.status, out.stdout, out.stderr) == (0, b"out", b"err")
    with pytest.raises(AttributeError):
        out.stdout = b"changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        out.status = ExitStatus(1)  # type: ignore[misc]
    assert out.stdout == b"out"
    assert dataclasses.replace(out, stdout=b"x").stdout == b"x"
    assert out == Output(ExitStatus(0), b"out", b"err")


def test_output_check() -> None:
    ok = Output(ExitStatus(0), b"out", b"err")
    assert ok.check() is ok
    failed = Output(ExitStatus(2), b"partial out", b"first\nsecond problem\n")
    with pytest.raises(ProcessFailed) as info:
        failed.check()
    exc = info.value
    assert exc.returncode == 2
    assert exc.output == b"partial out"
    assert exc.stdout == b"partial out"
    assert exc.stderr == b"first\nsecond problem\n"
    assert str(exc).rstrip().endswith("second problem")


def test_output_pickles() -> None:
    out = Output(ExitStatus(-9), b"o", b"e")
    copy = pickle.loads(pickle.dumps(out))
    assert copy == out
    assert type(copy.status) is ExitStatus
    assert copy.status.signal == 9


# -- ProcessFailed ---------------------------------------------------------------------


def test_process_failed_is_a_called_process_error() -> None:
    assert issubclass(ProcessFailed, subprocess.CalledProcessError)
    with pytest.raises(subprocess.CalledProcessError) as info:
        ExitStatus(1).check()
    assert isinstance(info.value, ProcessFailed)


def test_process_failed_fields() -> None:
    exc = ProcessFailed(ExitStatus(3), ["prog", "arg one"], b"out", b"err\n")
    assert exc.status == 3
    assert isinstance(exc.status, ExitStatus)
    assert exc.returncode == 3
    assert list(exc.cmd) == ["prog", "arg one"]
    assert (exc.output, exc.stdout, exc.stderr) == (b"out", b"out", b"err\n")
    message = str(exc)
    assert "prog" in message
    assert "arg one" in message
    assert "exit status: 3" in message
    assert message.rstrip().endswith("err")


def test_process_failed_message_for_a_signal() -> None:
    message = str(ProcessFailed(ExitStatus(-9), ["prog"]))
    assert "SIGKILL" in message
    assert "prog" in message


def test_process_failed_message_without_stderr() -> None:
    for stderr in (None, b""):
        message = str(ProcessFailed(ExitStatus(3), ["prog"], b"ignored output", stderr))
        assert "exit status: 3" in message
        assert "ignored output" not in message
        assert message == message.strip()


def test_process_failed_message_ends_with_last_stderr_lines() -> None:
    stderr = b"".join(b"line %d\n" % i for i in range(1000))
    message = str(ProcessFailed(ExitStatus(1), ["prog"], None, stderr))
    lines = message.rstrip().splitlines()
    assert lines[-1].strip() == "line 999"
    assert lines[-2].strip() == "line 998"
    assert len(message) < len(stderr)  # the last lines, not all of them
    # Undecodable bytes do not break it.
    message = str(ProcessFailed(ExitStatus(1), ["prog"], None, b"bad \xff byte\n"))
    assert message.rstrip().endswith("byte")


def test_process_failed_pickles() -> None:
    exc = ProcessFailed(ExitStatus(-6), ["prog", "x"], b"out", b"boom\n")
    for protocol in PROTOCOLS:
        copy = pickle.loads(pickle.dumps(exc, protocol))
        assert type(copy) is ProcessFailed
        assert type(copy.status) is ExitStatus
        assert copy.status.signal == 6
        assert copy.returncode == -6
        assert list(copy.cmd) == ["prog", "x"]
        assert (copy.output, copy.stderr) == (b"out", b"boom\n")
        assert str(copy) == str(exc)


# -- real children -----------------------------------------------------------------------


async def test_exit_code_from_a_child() -> None:
    with anyio.fail_after(10):
        status = await Command("sh", "-c", "exit 3").status()
    assert isinstance(status, ExitStatus)
    assert status == 3
    assert (status.code, status.signal, status.success, status.returncode) == (3, None, False, 3)
    assert str(status) == "exit status: 3"
    with pytest.raises(ProcessFailed) as info:
        status.check()
    assert info.value.returncode == 3
    assert "exit 3" in " ".join(map(str, info.value.cmd))
    assert "exit status: 3" in str(info.value)


async def test_success_from_a_child() -> None:
    with anyio.fail_after(10):
        status = await Command("true").status()
        out = await Command("echo", "fine").output()
    assert status == 0
    assert status.success
    assert status.check() is status
    assert out.check() is out
    assert out.stdout == b"fine\n"


async def test_child_killed_by_sigkill() -> None:
    with anyio.fail_after(10):
        async with spawn(Command("sleep", "30")) as child:
            assert child.returncode is None
            child.kill()
            status = await child.wait()
    assert status == -9
    assert child.returncode == -9
    assert (status.code, status.signal, status.success) == (None, signal.SIGKILL, False)
    assert str(status) == "signal: 9 (SIGKILL)"


async def test_child_killing_itself_with_sigterm() -> None:
    with anyio.fail_after(10):
        status = await Command("sh", "-c", "kill -TERM $$").status()
    assert status == -signal.SIGTERM
    assert status.signal == signal.SIGTERM
    assert str(status) == "signal: 15 (SIGTERM)"


async def test_child_aborting() -> None:
    # No core file: it would be slow, and land in the working directory.
    code = "import os, resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); os.abort()"
    with anyio.fail_after(10):
        out = await Command(*py(code)).output()
    assert out.status == -6
    assert out.status.signal == signal.SIGABRT
    assert "SIGABRT" in str(out.status)
    with pytest.raises(ProcessFailed) as info:
        out.check()
    assert "SIGABRT" in str(info.value)
    assert info.value.returncode == -6


async def test_failed_output_names_command_and_stderr() -> None:
    cmd = Command("sh", "-c", "echo partial; echo one >&2; echo two >&2; exit 2")
    with anyio.fail_after(10):
        out = await cmd.output()
    assert (out.status, out.stdout, out.stderr) == (2, b"partial\n", b"one\ntwo\n")
    with pytest.raises(ProcessFailed) as info:
        out.check()
    exc = info.value
    assert exc.returncode == 2
    assert exc.status.code == 2
    assert list(exc.cmd)[:2] == ["sh", "-c"]
    assert exc.output == b"partial\n"
    assert exc.stderr == b"one\ntwo\n"
    message = str(exc)
    assert message.rstrip().endswith("two")
    assert "one" in message
    assert "exit status: 2" in message
    # The error survives a trip through pickle (to another process, say).
    assert str(pickle.loads(pickle.dumps(exc))) == message


def test_process_failed_quotes_the_command_as_a_shell_would() -> None:
    message = str(ProcessFailed(1, ["grep", "a b", "-e", "it's"]))
    assert message.startswith("Command `grep 'a b' -e 'it'\"'\"'s'` failed with exit status: 1")


def test_signal_name_is_the_one_formatter() -> None:
    # The exit policy's logs and ExitStatus name signals through it; unknown numbers keep
    # their number (logs) or say so (ExitStatus's message, unchanged).
    from anyio_proc._status import signal_name

    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(9) == "SIGKILL"
    assert signal_name(9876543) == "9876543"
    assert signal_name(9876543, "unknown signal") == "unknown signal"
    assert str(ExitStatus(-9876543)) == "signal: 9876543 (unknown signal)"
