"""``python -m anyio_proc``: the ``anyio-proc`` command."""

from __future__ import annotations

from anyio_proc.services._cli import run

if __name__ == "__main__":
    run()
