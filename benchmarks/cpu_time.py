"""Run a benchmark script with its clock replaced by this thread's CPU time (``time.thread_time``).

At one torch thread every op runs in the calling thread, so CPU time leaves out the time a loaded
machine spends running other processes: the before/after comparisons of issue #25 were measured
this way on a shared 2-core box, where wall-clock runs swung 3-20x between processes.

    .venv-lerobot/bin/python benchmarks/cpu_time.py benchmarks/bench_lerobot_policies.py --threads 1
"""

import runpy
import sys
import time

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: cpu_time.py SCRIPT [ARGS...]")
    time.perf_counter = time.thread_time  # type: ignore[assignment]
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
