"""Run anyio's own ``tests/test_subprocesses.py`` against anyio_proc's open_process/run_process.

anyio's test code is not kept in this repository: this script downloads the source
distribution of the *installed* anyio version from PyPI, extracts its ``tests/`` folder and
its ``pyproject.toml`` (which holds anyio's pytest configuration) unmodified into a temporary
directory, and runs ``tests/test_subprocesses.py`` there with pytest, on the backends that
anyio's conftest parametrizes (asyncio, asyncio+uvloop when uvloop is installed,
asyncio+eager on Python 3.12+, and trio). The plugin ``anyio_proc_substitution`` (beside
this file) swaps anyio's subprocess functions for anyio_proc's before the tests are
imported and proves that they were the ones exercised; see README.md.

Usage::

    .venv/bin/python compat_suites/run_anyio_subprocess_tests.py [--sdist FILE] [--keep]
        [-- PYTEST ARGS...]

Exit status: pytest's (non-zero when any test failed or none ran), or 3 when the probe
shows that the tests did not go through anyio_proc, or 2 when the suite could not be set up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
TEST_FILE = "tests/test_subprocesses.py"
PLUGIN = "anyio_proc_substitution"
PROBE_FILE_ENV = "ANYIO_PROC_PROBE_FILE"


def download_sdist(anyio_version: str, dest: Path) -> Path:
    """``pip download`` anyio's sdist of exactly this version into ``dest``."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", f"anyio=={anyio_version}", "-d", str(dest),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    found = sorted(dest.glob(f"anyio-{anyio_version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip download left no anyio-{anyio_version}.tar.gz in {dest}")
    return found[0]


def extract_tests(sdist: Path, dest: Path) -> Path:
    """Write the sdist's ``tests/`` files and ``pyproject.toml`` under ``dest``; return the
    project folder.

    Members are read and written one by one (never ``extractall``) and only regular files
    with plain relative paths are taken, so a hostile archive cannot write elsewhere.
    """
    project = dest / "anyio"
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            # Every sdist member sits under one top folder, "anyio-<version>/".
            if len(parts) < 2 or not member.isfile() or ".." in parts:
                continue
            relative = PurePosixPath(*parts[1:])
            if relative.parts[0] != "tests" and str(relative) != "pyproject.toml":
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            target = project.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    if not (project / TEST_FILE).is_file():
        raise SystemExit(f"{sdist.name} has no {TEST_FILE}")
    if not (project / "pyproject.toml").is_file():
        raise SystemExit(f"{sdist.name} has no pyproject.toml (anyio's pytest configuration)")
    return project


def sha256_of_member(sdist: Path, relative: str) -> str:
    """The digest of one file as published, to show that the copy we ran is unmodified."""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if str(PurePosixPath(*parts[1:])) == relative:
                source = tar.extractfile(member)
                if source is not None:
                    return hashlib.sha256(source.read()).hexdigest()
    raise SystemExit(f"{sdist.name} has no {relative}")


def run_pytest(project: Path, probe_file: Path, pytest_args: list[str]) -> int:
    env = dict(os.environ)
    # As anyio's own tox environments do: only the plugins its pytest configuration names
    # (-p anyio, pytest_mock, timeout) load, plus ours.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env[PROBE_FILE_ENV] = str(probe_file)
    cmd = [
        sys.executable, "-m", "pytest", "-p", PLUGIN,
        TEST_FILE, *pytest_args,
    ]  # fmt: skip
    print("+", " ".join(cmd), f"(in {project})", flush=True)
    return subprocess.run(cmd, cwd=project, env=env, check=False).returncode


def check_probe(probe_file: Path) -> list[str]:
    """What the probe says is wrong: an empty list when every test ran through anyio_proc."""
    if not probe_file.is_file():
        return [f"the plugin {PLUGIN} wrote no probe file: was it loaded?"]
    probe = json.loads(probe_file.read_text(encoding="utf-8"))
    problems: list[str] = []
    per_test: dict[str, dict[str, int]] = probe["per_test"]
    if not per_test:
        problems.append("no test ran")
    idle = [nodeid for nodeid, counts in per_test.items() if not any(counts.values())]
    if idle:
        problems.append(f"{len(idle)} tests never called anyio_proc, e.g. {idle[:3]}")
    backend_calls: list[str] = probe["backend_calls"]
    if backend_calls:
        problems.append(
            f"anyio's own open_process() was called {len(backend_calls)} times, "
            f"e.g. {backend_calls[:3]}"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="use this anyio sdist instead of PyPI's")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    anyio_version = version("anyio")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="anyio-subprocess-tests-"))
    try:
        if args.sdist is not None:
            sdist = args.sdist.resolve()
        else:
            print(f"downloading the sdist of anyio {anyio_version} from PyPI", flush=True)
            sdist = download_sdist(anyio_version, workdir / "download")
        project = extract_tests(sdist, workdir)
        digest = sha256_of_member(sdist, TEST_FILE)
        copied = hashlib.sha256((project / TEST_FILE).read_bytes()).hexdigest()
        assert digest == copied, "the test file we run differs from the published one"
        prepared = time.monotonic()
        print(f"anyio {anyio_version}: {TEST_FILE} sha256 {digest} (unmodified)", flush=True)

        probe_file = workdir / "probe.json"
        status = run_pytest(project, probe_file, args.pytest_args)
        finished = time.monotonic()
        problems = check_probe(probe_file)
        for problem in problems:
            print(f"PROBE FAILED: {problem}", file=sys.stderr)
        print(
            f"timing: download and extract {prepared - started:.1f} s, "
            f"pytest {finished - prepared:.1f} s",
            flush=True,
        )
        if status != 0:
            return status
        return 3 if problems else 0
    except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
        print(f"could not set up anyio's tests: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
