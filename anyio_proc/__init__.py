"""Run and supervise child processes from async Python, with structured lifetimes.

One codebase on asyncio (plain and uvloop) and trio, through anyio::

    async with spawn(Command("grep", "-n", "error").stdin_piped().stdout_piped()) as child:
        ...
"""

from __future__ import annotations

from ._child import Child as Child
from ._command import Command as Command
from ._command import spawn as spawn
from ._compat import open_process as open_process
from ._compat import run_process as run_process
from ._limits import OutputLimitExceeded as OutputLimitExceeded
from ._pipeline import Pipeline as Pipeline
from ._pipeline_run import PipelineChild as PipelineChild
from ._pipeline_run import PipelineStatus as PipelineStatus
from ._pty import PtyStream as PtyStream
from ._spawn import SpawnContext as SpawnContext
from ._spec import Stdio as Stdio
from ._spec import StdioArg as StdioArg
from ._status import ExitStatus as ExitStatus
from ._status import Output as Output
from ._status import ProcessFailed as ProcessFailed
from ._streams import PipeReceiveStream as PipeReceiveStream
from ._streams import PipeSendStream as PipeSendStream

__all__ = [
    "Child",
    "Command",
    "ExitStatus",
    "Output",
    "OutputLimitExceeded",
    "PipeReceiveStream",
    "PipeSendStream",
    "Pipeline",
    "PipelineChild",
    "PipelineStatus",
    "ProcessFailed",
    "PtyStream",
    "SpawnContext",
    "Stdio",
    "StdioArg",
    "open_process",
    "run_process",
    "spawn",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("anyio_proc."):
        _obj.__module__ = __name__
del _name, _obj
