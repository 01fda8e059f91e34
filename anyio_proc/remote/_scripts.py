"""The two shell scripts run on the remote host, and the command lines that start them.

Values only: nothing here opens a connection. The remote side needs a POSIX ``sh`` with
its ``kill`` and the standard ``sleep``, ``mkdir``, ``mkfifo``, ``rm`` and ``env``
utilities; no Python, nothing installed.

**The agent** runs as the master connection's own command, one per connection. It makes a
private directory (mode 0700) holding a FIFO and one empty file per live process group,
``g.<pgid>.<signal>.<ticks>`` (created by each command's wrapper before the command runs),
then reads orders from its stdin, one per line:

- ``k SIG PGID``: send SIG (a name: ``TERM``) to the process group;
- ``s SIG PID``: send SIG to one process (the command itself);
- ``w TOKEN PGID``: report ``g TOKEN`` once the group has no process left;
- ``r PGID``: forget the group (its block is over);
- ``y TOKEN``: report ``y TOKEN`` (a barrier: every report written before is delivered).

When its stdin ends (the program closed the connection, or died, even by SIGKILL; the
master died; sshd saw the connection drop) it sends each group's own shutdown signal,
waits up to each one's grace period (``ticks`` of 0.1 s) and SIGKILLs what is left.

A group is alive while ``kill -s 0`` reaches it. That counts zombies, and an orphan's
zombie waits for init to reap it, which some containers' init does late: after five
polling steps, where ``/proc`` exists, ``member`` looks for one in another state (a scan of
``/proc``, too slow for every step: ``read`` takes a byte at a time).
Its forwarder (below) ends on a ``q`` line rather than a signal: a signal sent just
after the fork could reach the copy of the agent's handler before the subshell resets it.

**The reports** reach the program on the agent's stdout, so they can never be confused
with a command's output: each wrapper writes its lines into the agent's FIFO on a
dedicated descriptor (4), which is closed before the command runs; a forwarder copies the
FIFO to the agent's stdout. Each line is one ``write`` shorter than ``PIPE_BUF``, so lines
from concurrent wrappers never interleave:

- ``p TOKEN PGID PID``: the command passed its checks and is about to ``exec``;
- ``e TOKEN cwd|program PGID`` / ``e TOKEN closing``: it could not start (working
  directory, program not found; the agent is shutting down);
- ``x TOKEN c CODE`` / ``x TOKEN s NAME``: it exited with CODE, or was killed by signal
  NAME (the shell reports both as ``$?``; like the shell, a code above 128 that names a
  signal is read as that signal).

**The wrapper** is what sshd runs for each command. sshd makes a session's command the
leader of a new session, hence of its own process group: the wrapper is ``exec``-ed by
the login shell, so its pid is that group's id. It registers the group, traps the
signals a group signal brings (so that it survives to report the status), and runs the
command in the foreground: a small ``sh`` applies the environment and working directory,
checks that the program exists, reports its own pid and ``exec``-s the program with the
signal dispositions of a normal command.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._spec import Spec

__all__ = [
    "AGENT",
    "TICK",
    "WRAPPER",
    "agent_command",
    "command_script",
    "wrapper_command",
]

#: The agent's polling step, in seconds (``sleep 0.1``; a ``sleep`` without fractions
#: makes it 1 s).
TICK = 0.1

AGENT = r"""
member() {
  [ -r /proc/self/stat ] || return 0
  for _s in /proc/[0-9]*/stat; do
    read -r _l < "$_s" || continue
    case $_l in *") Z "*) continue ;; esac
    _l=${_l##*) }
    _l=${_l#* }
    _l=${_l#* }
    [ "${_l%% *}" = "$1" ] && return 0
  done 2>/dev/null
  return 1
}
alive() {
  kill -s 0 -- "-$1" 2>/dev/null || return 1
  [ "$2" -lt 5 ] || member "$1"
}
umask 077
trap '' PIPE
stop=
trap 'stop=1' HUP INT TERM
i=0
while :; do
  d=${TMPDIR:-/tmp}/anyio-proc.$$.$i
  mkdir "$d" 2>/dev/null && break
  i=$((i+1))
  if [ "$i" -ge 50 ]; then echo "anyio-proc agent: cannot create $d" >&2; exit 1; fi
done
if ! mkfifo "$d/f"; then rmdir "$d"; exit 1; fi
exec 5<>"$d/f"
( while IFS= read -r l <&5 && [ "$l" != q ]; do printf '%s\n' "$l" || exit 0; done ) &
echo "ready $d"
while [ -z "$stop" ] && IFS=' ' read -r op a b c; do
  case $op in
    k) kill -s "$a" -- "-$b" 2>/dev/null ;;
    s) kill -s "$a" "$b" 2>/dev/null ;;
    w) if ! alive "$b" 0; then echo "g $a" >&5; continue; fi
       ( n=0
         while alive "$b" "$n"; do
           case $n in 0|1|2|3|4) s=0.02 ;; *) s=0.1 ;; esac
           n=$((n+1))
           sleep "$s" 2>/dev/null || sleep 1
         done
         echo "g $a" >&5 ) & ;;
    r) rm -f "$d/g.$a".* ;;
    y) echo "y $a" >&5 ;;
  esac
done
: > "$d/closing"
set --
for f in "$d"/g.*; do
  [ -e "$f" ] || continue
  g=${f##*/g.}
  r=${g#*.}
  g=${g%%.*}
  kill -s "${r%%.*}" -- "-$g" 2>/dev/null && set -- "$@" "$g:${r#*.}"
done
t=0
while [ $# -gt 0 ]; do
  left=
  for e in "$@"; do
    g=${e%%:*}
    if alive "$g" "$t"; then
      if [ "$t" -ge "${e#*:}" ]; then kill -s KILL -- "-$g" 2>/dev/null
      else left="$left $e"; fi
    fi
  done
  set -- $left
  [ $# -gt 0 ] || break
  if sleep 0.1 2>/dev/null; then t=$((t+1)); else sleep 1; t=$((t+10)); fi
done
echo q >&5
rm -rf "$d"
""".strip()

# $1: the agent's directory, $2: the token, $3/$4: the group's shutdown signal and grace
# ticks for the agent's last-resort cleanup, $5: the command's own script (command_script).
# The wrapper's stderr goes to /dev/null so that the shell's own notices ("Terminated")
# never reach the command's stderr, which the script gets back on fd 6.
WRAPPER = r"""
d=$1 t=$2
[ -p "$d/f" ] || exit 125
exec 4<>"$d/f" 6>&2 2>/dev/null
g=$d/g.$$.$3.$4
: > "$g"
if [ -e "$d/closing" ]; then rm -f "$g"; echo "e $t closing" >&4; exit 125; fi
trap : HUP INT QUIT TERM USR1 USR2 ALRM PIPE
sh -c "$5" sh "$t" "$$"
st=$?
if [ "$st" -gt 128 ] && n=$(kill -l "$st" 2>/dev/null); then echo "x $t s $n" >&4
else echo "x $t c $st" >&4; fi
exit "$st"
""".strip()

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _q(value: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    return shlex.quote(os.fsdecode(value))


def remote_env_name(name: str) -> str:
    """``name`` if the remote shell can set it, else :class:`ValueError`."""
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"environment variable {name!r} cannot be set on a remote host: its name must "
            "be a shell identifier (letters, digits and _, not starting with a digit)"
        )
    return name


def command_script(spec: Spec) -> str:
    """The ``sh`` script that starts ``spec``'s program on the remote host (the wrapper's
    ``$5``): environment, working directory, the program check, the report, ``exec``.

    Every value is quoted for the shell with :func:`shlex.quote`, so spaces, quotes, ``$``,
    newlines and any other byte reach the program as they were given.
    """
    lines = ["exec 2>&6 6>&-"]
    if spec.umask is not None:
        lines.append(f"umask {spec.umask:03o}")
    final: dict[str, str] = {}  # what env_clear leaves: only what this command sets
    for key, value in spec.env:
        name = remote_env_name(key)
        if value is None:
            final.pop(name, None)
            lines.append(f"unset {name}")
        else:
            final[name] = value
            lines.append(f"export {_q(f'{name}={value}')}")
    if spec.cwd is not None:
        lines.append(f'cd -- {_q(spec.cwd)} 2>/dev/null || {{ echo "e $1 cwd $2" >&4; exit 126; }}')
    program = _q(spec.program)
    lines.append(
        f'command -v {program} >/dev/null 2>&1 || {{ echo "e $1 program $2" >&4; exit 127; }}'
    )
    lines.append('echo "p $1 $2 $$" >&4')
    words = [_q(a) for a in (spec.program, *spec.args)]
    if spec.env_clear:
        # env -i drops what the login gave the shell: only this command's own variables.
        words = ["env", "-i", *(_q(f"{k}={v}") for k, v in final.items()), *words]
    lines.append("exec " + " ".join(words) + " 4>&-")
    return "\n".join(lines)


def grace_ticks(timeout: float) -> int:
    """The agent's cleanup grace period, in its polling steps (rounded up)."""
    return max(1, math.ceil(timeout / TICK))


def wrapper_command(
    directory: str, token: int, signal_name: str, timeout: float, script: str
) -> str:
    """The command line sshd's login shell runs for one command."""
    args = [directory, str(token), signal_name, str(grace_ticks(timeout)), script]
    return f"exec sh -c {_q(WRAPPER)} anyio-proc " + " ".join(_q(a) for a in args)


def agent_command() -> str:
    """The command line of the master connection: the agent."""
    return f"exec sh -c {_q(AGENT)} anyio-proc-agent"
