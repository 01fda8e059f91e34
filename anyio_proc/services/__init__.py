"""Services on top of :mod:`anyio_proc`: a :class:`Supervisor` of named, restartable
processes with readiness checks and one ordered shutdown, and the ``anyio-proc`` command
(a Procfile runner, ``python -m anyio_proc``).

::

    from anyio_proc import Command
    from anyio_proc.services import ReadyPort, Supervisor

    async with Supervisor(on_output=print) as sup:
        await sup.start("db", Command("redis-server", "--port", "6400"), ready=ReadyPort(6400))
        await sup.start("web", Command("gunicorn", "app:app"), restart="on-failure")
        await sup.wait()

This package is built on the public API of :mod:`anyio_proc` only, as any application
would be; nothing in the library's core imports it.
"""

from __future__ import annotations

from ._events import OutputLine as OutputLine
from ._events import ServiceEvent as ServiceEvent
from ._events import ServiceFailed as ServiceFailed
from ._policy import Backoff as Backoff
from ._policy import RestartPolicy as RestartPolicy
from ._ready import ReadyCheck as ReadyCheck
from ._ready import ReadyLine as ReadyLine
from ._ready import ReadyPort as ReadyPort
from ._service import Service as Service
from ._supervisor import Supervisor as Supervisor

__all__ = [
    "Backoff",
    "OutputLine",
    "ReadyCheck",
    "ReadyLine",
    "ReadyPort",
    "RestartPolicy",
    "Service",
    "ServiceEvent",
    "ServiceFailed",
    "Supervisor",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("anyio_proc.services."):
        _obj.__module__ = __name__
del _name, _obj
