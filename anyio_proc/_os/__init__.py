"""Every OS mechanism of the package, one module per idea.

Nothing outside this folder tests ``sys.platform`` or ``os.name``: supporting another OS
means working here only. The modules above import what they need from these modules by
name; this package itself exports nothing. From the rest of the package, these modules
import only the values (``_spec``, ``_status``) and ``_polling``.

Starting a process:
  ``launch.py``          posix_spawn or Popen, chosen per command
  ``posix_spawn.py``     the fast path (Linux), and its EBADF fallback to Popen
  ``popen.py``           the path for every command, with our ownership rules
  ``stdio_plan.py``      stdio made safe to install when the parent's 0-2 are free
  ``launch_records.py``  the pids created and not yet owned, so that none is lost
  ``pty.py``             pseudo-terminals, and starting a child on one
  ``pdeathsig.py``       ``die_with_parent``: the parent-death signal and its forker
  ``shell.py``, ``users.py``, ``memfile.py``  the shell's argv, user and group ids, an
                         unnamed file

Reaching and watching processes:
  ``waiters/``           one exit waiter per mechanism (pidfd, thread, kqueue, Windows)
  ``signals.py``         the signal that cannot be caught; holding back those that can
  ``census.py``          one listing of ``/proc`` shared by the groups and sessions
                         being stopped, taken in a worker thread (Linux)
  ``groups.py``          process groups: signal one, are members left, which session
  ``session.py``         the members of a session our child leads (Linux)
  ``tree.py``            a child's descendants, found with the tree frozen (Linux)
  ``pidfds.py``          pidfds for processes that are not our children (Linux)
  ``procfs.py``          the one ``/proc`` reader, ``stat`` parser included (Linux)
  ``pipes.py``           blocking mode and capacity of pipes
  ``leaks.py``           what a test left behind, for the pytest plugin: children, fds,
                         and hooks noting where each process was started
"""
