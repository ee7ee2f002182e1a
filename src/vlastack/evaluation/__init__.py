"""vlastack.evaluation: reproducible closed-loop evaluation of policies and its report.

``rollout.evaluate`` (parallel worker rollouts) → ``metrics`` (success ± Wilson 95% CI, jerk,
chunk jumps, latency, memory) → results folder (``manifest.json`` from ``manifest``,
``episodes.jsonl``, ``summary.json``, ``videos/`` from ``video``) → ``report.build_report`` (HTML).
``rollout`` is built from ``loading``, ``remap``, ``episode``, ``pool`` and ``results``;
``reproduce`` re-runs a manifest, ``remote`` evaluates on simulators in their own venv
(``remote_sharded``: one episode per pool or Ray job). The benchmark suites that also train are
``vlastack.experiments``, one layer up.
"""
