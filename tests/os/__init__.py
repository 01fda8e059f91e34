"""Tests of the OS mechanisms (``anyio_proc/_os/``): launching, /proc, trees, waiters."""
