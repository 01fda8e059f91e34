"""Tests of the pytest plugin for users (``anyio_proc/pytest_plugin.py``), through pytester."""
