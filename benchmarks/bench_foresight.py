"""Flat policy vs CoT-VLA's latent subgoal vs the world-model auxiliary loss, on the demo's data.

Each arm trains the same number of steps on one collected dataset (the ``vlastack demo`` data:
the four demo Meta-World tasks) with the demo's settings, then is rolled out on the demo's
held-out seeds. Written per arm: ``<out>/<arm>/run`` (training), ``<out>/<arm>/eval`` (results),
and ``<out>/foresight_compare.json`` + ``report.html`` over all arms. Arms:

* ``flat``: recipe ``demo`` (frozen MobileNetV2 + MiniLM + trunk + L1 head)
* ``cot``: recipe ``cot_vla`` (the same + a latent subgoal 8 frames ahead)
* ``wm``: ``demo`` + ``--model.world_model.weight=0.1 --model.world_model.horizon=8``
* ``flow`` / ``flow_wm_rank``: the demo backbone with a flow-matching head, without / with the
  world model ranking 8 sampled chunks (medoid rule)
* ``flower``: the demo backbone with half its trunk layers and FLOWER's head (global AdaLN,
  rectified flow, 4 steps): compare with ``flow``
* ``hierarchy``: ``flow`` + the System 2 / System 1 split (subtask classifier + subtask token):
  compare with ``flow``

    python benchmarks/bench_foresight.py --data DEMO_OUT/data --out runs-cot --steps 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FLOW = [
    "--model.head=flow_matching",
    '--model.head_kwargs={"width": 128, "depth": 2, "num_heads": 4, "num_steps": 10}',
]
WM = ["--model.world_model.weight=0.1", "--model.world_model.horizon=8"]
ARMS: dict[str, tuple[str, list[str]]] = {
    "flat": ("demo", []),
    "cot": ("cot_vla", []),
    "wm": ("demo", WM),
    "flow": ("demo", FLOW),
    "flow_wm_rank": ("demo", [*FLOW, *WM, "--model.world_model.rank_samples=8"]),
    "flower": (
        "demo",
        [
            "--model.head=flower",
            '--model.head_kwargs={"width": 128, "depth": 2, "num_heads": 4, "num_steps": 4}',
            "--model.trunk_layers=1",
            # FLOWER clips the chunk to [-1, 1]: its published (min-max) action range
            '--model.normalization={"observation.state": "mean_std", "action": "min_max"}',
        ],
    ),
    "hierarchy": ("demo", [*FLOW, "--model.hierarchy=true"]),
}


def run_arm(name: str, data: Path, out: Path, steps: int, episodes: int, workers: int) -> dict:
    from vlastack.demo import DEMO_TASKS, EVAL_SEED
    from vlastack.evaluation.rollout import evaluate
    from vlastack.training.config import TrainConfig
    from vlastack.training.loop import train

    recipe, extra = ARMS[name]
    arm = out / name
    tcfg = TrainConfig.from_recipe(
        recipe,
        [
            f"--out_dir={arm / 'run'}",
            f"--steps={steps}",
            "--batch_size=64",
            "--seed=0",
            "--max_minutes=60",
            "--model.image_size=[96,96]",
            "--log=none",
            *extra,
        ],
    )
    tcfg.data = [str(data)]
    tcfg.progress = False
    t0 = time.perf_counter()
    result = train(tcfg)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = evaluate(
        result.last_checkpoint,
        DEMO_TASKS[0],
        tasks=list(DEMO_TASKS),
        episodes_per_task=episodes,
        seed=EVAL_SEED,
        workers=workers,
        image_size=(96, 96),
        camera="corner2",
        video_episodes_per_task=0,
        out_dir=arm / "eval",
        label=f"{name} ({recipe} {' '.join(extra)})".strip(),
        progress=False,
    )
    o = res.summary["overall"]
    row = {
        "arm": name,
        "recipe": recipe,
        "overrides": extra,
        "steps": result.step,
        "train_s": round(train_s, 1),
        "train_samples_per_s": result.samples_per_s,
        "eval_s": round(time.perf_counter() - t0, 1),
        "successes": o.get("successes"),
        "episodes": o.get("completed"),
        "success_rate": o.get("success_rate"),
        "ci95": [o.get("ci95_low"), o.get("ci95_high")],
        "latency_ms": o.get("latency"),
        "mean_squared_jerk": o.get("mean_squared_jerk"),
        "per_task": {
            t: [a.get("successes"), a.get("completed")]
            for t, a in res.summary.get("per_task", {}).items()
        },
    }
    (arm / "row.json").write_text(json.dumps(row, indent=2, default=str))
    return row


def plot(rows: list[dict], path: Path) -> None:
    """Success per arm with Wilson 95% whiskers (the rows of one or more runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows)), 3.6))
    for i, r in enumerate(rows):
        p, (lo, hi) = 100 * r["success_rate"], [100 * x for x in r["ci95"]]
        ax.bar(i, p, color="tab:orange" if "flow" in " ".join(r["overrides"]) else "tab:blue")
        ax.errorbar(i, p, yerr=[[p - lo], [hi - p]], color="k", capsize=4)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['arm']}\n({r['recipe']})" for r in rows], fontsize=8)
    ax.set_ylabel("success %, Wilson 95%")
    ax.set_ylim(0, 100)
    steps = sorted({r["steps"] for r in rows})
    ax.set_title(f"same data and backbone, {steps} training steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--plot-only",
        nargs="+",
        metavar="JSON",
        help="only draw --out (a .png) from the foresight_compare.json of earlier runs",
    )
    p.add_argument("--data")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--arms", nargs="+", default=["flat", "cot", "wm"], choices=list(ARMS))
    a = p.parse_args()
    if a.plot_only:
        plot([r for f in a.plot_only for r in json.loads(Path(f).read_text())], Path(a.out))
        return
    if not a.data:
        p.error("--data is required (the demo's dataset folder)")
    out = Path(a.out)
    rows = []
    for name in a.arms:
        print(f"=== arm {name}", flush=True)
        rows.append(run_arm(name, Path(a.data), out, a.steps, a.episodes_per_task, a.workers))
        (out / "foresight_compare.json").write_text(json.dumps(rows, indent=2, default=str))
    from vlastack.evaluation.report import build_report

    build_report([out / r["arm"] / "eval" for r in rows], out / "report.html", videos="link")
    plot(rows, out / "foresight_compare.png")
    for r in rows:
        print(
            f"{r['arm']:>13}: {r['successes']}/{r['episodes']} "
            f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] train {r['train_s']} s"
        )


if __name__ == "__main__":
    main()
