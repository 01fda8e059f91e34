"""A real OpenSSH server on 127.0.0.1 for the remote tests, and the checks after each.

The session fixture :func:`ssh_server` starts Debian's ``sshd`` on a free port with a
generated host key, for a dedicated non-root account (``anyio-proc-test``, created if
missing) that logs in with a generated key. The client side is a config file passed with
``-F``, so the user's own ``~/.ssh/config`` stays out; host keys are checked against a
known_hosts line, never skipped. ``sshd`` is stopped and everything removed at the end.

Without ``/usr/sbin/sshd``, or when not root (the account cannot be made), the tests skip
with the reason; ``.ci/run`` installs ``openssh-server`` so they run there.

After each test, :func:`nothing_left` waits (with a bound) until the test account has no
process left (``remote`` is localhost: its processes are in our ``/proc``) and no local
``ssh`` process of ours is running, orphaned ones included.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

SSHD = "/usr/sbin/sshd"
ACCOUNT = "anyio-proc-test"
HOST_ALIAS = "anyio-proc-test-server"
#: How long the remote side may take to tidy up after a test (sshd's session processes
#: exit once their connection has closed).
SETTLE = 10.0


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _keygen(path: Path, comment: str) -> str:
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


def _account() -> pwd.struct_passwd:
    """The test account, made on first use: a normal user with a POSIX login shell."""
    try:
        return pwd.getpwnam(ACCOUNT)
    except KeyError:
        pass
    _run("useradd", "--create-home", "--shell", "/bin/sh", ACCOUNT)
    return pwd.getpwnam(ACCOUNT)


def _authorize(account: pwd.struct_passwd, public_key: str) -> None:
    """Install ``public_key`` as the account's only authorized key, with the modes sshd's
    StrictModes insists on (nothing writable by others along the way)."""
    # useradd locks the password ("!"); without PAM, sshd refuses a locked account even
    # for key logins. "*" means no password login, but not locked.
    _run("usermod", "-p", "*", ACCOUNT)
    home = Path(account.pw_dir)
    dot_ssh = home / ".ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    keys = dot_ssh / "authorized_keys"
    keys.write_text(public_key + "\n")
    for path, mode in ((home, 0o755), (dot_ssh, 0o700), (keys, 0o600)):
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, mode)


@dataclass
class SSHServer:
    """The running test server and what a client needs to reach it."""

    destination: str  # the Host alias of the client config
    config_file: Path  # pass with -F (ssh_host(config_file=...))
    port: int
    account: str
    uid: int
    workdir: Path
    client_key: Path
    known_hosts: Path
    wrong_key: Path  # a client key the account does not accept
    other_host_key: Path  # the public half of a host key that is not the server's

    def client_config(self, name: str, **overrides: str) -> Path:
        """A variant of the client config: ``overrides`` replace options by name (a wrong
        ``IdentityFile``, another ``UserKnownHostsFile``)."""
        options = _client_options(self.port, self.client_key, self.known_hosts)
        options.update(overrides)
        path = self.workdir / f"ssh_config.{name}"
        path.write_text(_config_text(options))
        return path

    def processes(self) -> dict[int, str]:
        """Every process of the test account (the "remote" side), pid to command line."""
        return _processes_of(self.uid)


def _client_options(port: int, key: Path, known_hosts: Path) -> dict[str, str]:
    return {
        "HostName": "127.0.0.1",
        "Port": str(port),
        "User": ACCOUNT,
        "IdentityFile": str(key),
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "UpdateHostKeys": "no",
        "ConnectTimeout": "10",
    }


def _config_text(options: dict[str, str]) -> str:
    lines = [f"Host {HOST_ALIAS}"]
    lines += [f"    {key} {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _processes_of(uid: int) -> dict[int, str]:
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2 :].split()[0] == b"Z":
            continue  # a zombie is about to be reaped by its parent
        found[int(name)] = cmdline
    return found


def local_ssh_processes(marker: str) -> dict[int, str]:
    """Local ``ssh`` clients whose command line mentions ``marker`` (our config file)."""
    mine = _processes_of(os.getuid())
    return {pid: cmd for pid, cmd in mine.items() if cmd.startswith("ssh ") and marker in cmd}


def _die_with_parent() -> None:
    """In sshd before exec: SIGTERM when pytest dies (prctl(PR_SET_PDEATHSIG))."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def _wait_listening(port: int, sshd: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            raise RuntimeError(f"sshd exited with {sshd.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"sshd did not listen on port {port} within 10 s: {log.read_text()}")


@pytest.fixture(scope="package")
def ssh_server() -> Iterator[SSHServer]:
    """A private sshd on 127.0.0.1 while the tests of this folder run (package scope: tests
    elsewhere check that the test process has no child at all)."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is not installed (Debian: apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the remote tests need root, to run sshd for a dedicated test account")
    account = _account()
    workdir = Path(tempfile.mkdtemp(prefix="anyio-proc-sshd-"))
    sshd: subprocess.Popen[bytes] | None = None
    try:
        host_key = workdir / "host_key"
        host_public = _keygen(host_key, "anyio-proc test host")
        client_key = workdir / "client_key"
        _authorize(account, _keygen(client_key, "anyio-proc test client"))
        wrong_key = workdir / "wrong_key"
        _keygen(wrong_key, "anyio-proc test: not authorized")
        other_host_key = workdir / "other_host_key"
        _keygen(other_host_key, "anyio-proc test: another host")
        port = _free_port()
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_public}\n")
        config = workdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {workdir / 'sshd.pid'}",
                    f"AllowUsers {ACCOUNT}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes yes",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LogLevel INFO",
                    # MaxSessions stays at its default (10): the tests go past it.
                ]
            )
            + "\n"
        )
        # Privilege separation needs this directory; a container may not have it yet.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = workdir / "sshd.log"
        with open(log, "wb") as log_file:
            sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                # A test run killed outright must not leave a server listening.
                preexec_fn=_die_with_parent,
            )
        _wait_listening(port, sshd, log)
        client_config = workdir / "ssh_config"
        client_config.write_text(_config_text(_client_options(port, client_key, known_hosts)))
        yield SSHServer(
            destination=HOST_ALIAS,
            config_file=client_config,
            port=port,
            account=ACCOUNT,
            uid=account.pw_uid,
            workdir=workdir,
            client_key=client_key,
            known_hosts=known_hosts,
            wrong_key=wrong_key,
            other_host_key=other_host_key.with_suffix(".pub"),
        )
    finally:
        if sshd is not None:
            sshd.send_signal(signal.SIGTERM)
            try:
                sshd.wait(10)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait()
        # Whatever the account still runs belongs to these tests: nothing may outlive them,
        # nor the private directories of agents that were killed that way.
        for pid in _processes_of(account.pw_uid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in glob.glob(os.path.join(tempfile.gettempdir(), "anyio-proc.*")):
            if os.stat(path).st_uid == account.pw_uid:
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def settled(server: SSHServer, timeout: float = SETTLE) -> tuple[dict[int, str], dict[int, str]]:
    """Wait until nothing of the tests runs on either side; what is left after ``timeout``
    (remote processes, local ssh processes)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        remote = server.processes()
        local = local_ssh_processes(str(server.workdir))
        if (not remote and not local) or time.monotonic() >= deadline:
            return remote, local
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@pytest.fixture(autouse=True)
def nothing_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the server: no remote process, no local ssh process."""
    yield
    if "ssh_server" not in request.fixturenames:
        return
    server: SSHServer = request.getfixturevalue("ssh_server")
    remote, local = settled(server)
    problems = []
    if remote:
        problems.append(f"remote processes left: {remote}")
    if local:
        problems.append(f"local ssh processes left: {local}")
    for pid in [*remote, *local]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
