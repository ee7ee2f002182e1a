"""vlastack: build, train, benchmark and serve Vision-Language-Action robot policies.

The package is organised by the data path (see ARCHITECTURE.md): ``data`` (LeRobot v3 episodes),
``envs`` (simulators), ``models`` (vision → projector → language → action head), ``training``,
``evaluation``, ``serving`` and ``export``.
"""

import os as _os

# How torch's OpenMP threads wait between parallel regions. libgomp's default spins 300,000
# iterations: on a loaded 2-core CPU spinning threads collapsed training 10-40x (BENCHMARKS.md).
# Not spinning at all (OMP_WAIT_POLICY=PASSIVE, this package's earlier default) makes every op
# pay a futex wake-up instead: batch-1 inference at 2 threads took 75-90 ms per call vs 27-31 ms
# with a short spin (a DP-C checkpoint, `vlastack bench latency`). A bounded spin waits through
# the gap between consecutive small ops, then sleeps. Only a default: a user's own OpenMP wait
# settings win, and it must be set before torch loads.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"

__version__ = "0.1.0"
