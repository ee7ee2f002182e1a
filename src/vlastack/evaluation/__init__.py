"""vlastack.evaluation: reproducible closed-loop evaluation of policies and its report.

``rollout.evaluate`` (parallel worker rollouts) → ``metrics`` (success ± Wilson 95% CI, jerk,
chunk jumps, latency, memory) → results folder (``manifest.json`` from ``manifest``,
``episodes.jsonl``, ``summary.json``, ``videos/`` from ``video``) → ``report.build_report`` (HTML).
"""
