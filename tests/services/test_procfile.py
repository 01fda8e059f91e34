"""Procfile, ``#@ready`` and ``.env`` parsing: what is accepted, and where errors point."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyio_proc.services._config import ConfigError
from anyio_proc.services._envfile import parse_env, read_env
from anyio_proc.services._procfile import ReadySpec, parse_procfile, parse_ready, read_procfile


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_procfile(text, "P")
    return [str(p) for p in info.value.problems]


def test_procfile_entries_in_order_with_comments_and_blank_lines() -> None:
    procfile = parse_procfile(
        "# a comment\n\nweb:  python -m http.server $PORT  \nworker_2:echo a:b # c\n"
        "  indented-name : run it\n",
        "P",
    )
    assert [(p.name, p.command, p.line) for p in procfile.processes] == [
        ("web", "python -m http.server $PORT", 3),
        ("worker_2", "echo a:b # c", 4),  # the command is the shell's: '#' and ':' kept
        ("indented-name", "run it", 5),
    ]
    assert procfile.ready == {}


def test_ready_directives() -> None:
    procfile = parse_procfile(
        "#@ready web=port\n#@ready db=port:5432\n#@ready w=re:^ready$\n#@ready x=listening on\n"
        "web: a\ndb: b\nw: c\nx: d\n",
        "P",
    )
    assert procfile.ready == {
        "web": ReadySpec("port", "$PORT"),
        "db": ReadySpec("port", "5432"),
        "w": ReadySpec("regex", "^ready$"),
        "x": ReadySpec("regex", "listening on"),
    }


def test_every_problem_reported_with_its_line() -> None:
    found = problems(
        "web: a\nweb: b\nno colon here\nempty:\nbad name!: x\n#@ready ghost=port\n"
        "#@ready web=port:0\n#@ready web=re:(\n#@wait web\n#@ready web\n"
    )
    # The regex error's wording is the re module's own, and varies between versions.
    assert found[6].startswith("P:8: readiness of 'web': bad regular expression '(': ")
    del found[6]
    assert found == [
        "P:2: duplicate process name 'web' (first defined on line 1)",
        "P:3: expected 'name: command', got 'no colon here'",
        "P:4: process 'empty' has an empty command",
        "P:5: bad process name 'bad name!': use letters, digits, '_' and '-'",
        "P:6: #@ready names unknown process 'ghost'",
        "P:7: readiness of 'web': port 0 is out of range (1-65535)",
        "P:9: unknown directive '#@wait' (known: #@ready)",
        "P:10: expected '#@ready name=SPEC'",
    ]


def test_ready_given_twice_and_empty_procfile() -> None:
    assert problems("#@ready a=x\n#@ready a=y\na: run\n") == ["P:2: readiness of 'a' given twice"]
    assert problems("# only comments\n\n") == ["P: no processes defined"]


def test_config_error_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_procfile("a\nb\nc\n", "P")
    assert str(info.value) == "P:1: expected 'name: command', got 'a' (and 2 more problem(s))"


def test_port_spec_expands_variables() -> None:
    spec = parse_ready("port:${WEB_PORT}")
    assert spec.port_number({"WEB_PORT": "8123"}) == 8123
    assert parse_ready("port").port_number({"PORT": "5100"}) == 5100
    with pytest.raises(ValueError, match=r"\$WEB_PORT is not set"):
        spec.port_number({})
    with pytest.raises(ValueError, match="not a number"):
        spec.port_number({"WEB_PORT": "eighty"})
    for bad in ("port:", "port:http", "port:70000", "re:", ""):
        with pytest.raises(ValueError):
            parse_ready(bad)


def test_env_file_syntax() -> None:
    env = parse_env(
        "# comment\nA=1\nexport B = two words  # trailing comment\nC='single # kept $X'\n"
        'D="line\\nbreak \\"q\\""\nE=\nF=a=b\n'
    ).values
    assert env == {
        "A": "1",
        "B": "two words",
        "C": "single # kept $X",
        "D": 'line\nbreak "q"',
        "E": "",
        "F": "a=b",
    }


def test_env_file_problems() -> None:
    with pytest.raises(ConfigError) as info:
        parse_env('OK=1\njust words\n1BAD=x\nQ=\'open\nR="x" y\n', ".env")
    assert [str(p) for p in info.value.problems] == [
        ".env:2: expected 'KEY=value', got 'just words'",
        ".env:3: bad variable name '1BAD'",
        ".env:4: Q: unterminated single quote",
        ".env:5: R: unexpected text after the closing quote: 'y'",
    ]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Procfile not found"):
        read_procfile(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="is a directory"):
        read_env(str(tmp_path))
    (tmp_path / "bin").write_bytes(b"web: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_procfile(str(tmp_path / "bin"))
