"""The tests' vlastack plugin (``VLASTACK_PLUGINS=vlastack_test_plugins``, set by conftest.py).

Importing it registers the fake point-reaching envs, their suite and the scripted checkpoint
format from ``fakes``, exactly as a user's plugin registers its own; worker processes and CLI
subprocesses import it through the same variable (conftest puts ``tests/`` on PYTHONPATH).
"""

from __future__ import annotations

from vlastack_test_plugins import fakes

fakes.register()

__all__ = ["fakes"]
