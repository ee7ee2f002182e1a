"""vlastack: build, train, benchmark and serve Vision-Language-Action robot policies.

The package is organised by the data path (see ARCHITECTURE.md): ``data`` (LeRobot v3 episodes),
``envs`` (simulators), ``models`` (vision → projector → language → action head), ``training``,
``evaluation``, ``serving`` and ``export``.
"""

import os as _os

# OpenMP threads that spin-wait for a busy core make torch 10-30x slower on a shared small CPU
# (measured on the 2-core dev machine, see BENCHMARKS.md); passive waiting costs nothing when
# the machine is idle. Only a default: a user's own setting wins, and it must precede torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
