"""Simulator adapter overhead and collection throughput (issue 3 speed targets).

For each adapter: steps/s with rendering at 128x128 through vlastack vs the raw simulator's own
step+render in the same run (same CPU render settings), and ``collect`` throughput (frames/s)
with 1 and 2 worker processes on Meta-World. Optional: scripted-expert success tables
(``--experts N`` seeds per Meta-World task, ``--pusht-episodes N`` test seeds for PushT).
Prints a table and a last-line JSON. Target: adapter overhead <= 20% of the raw rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

SIZE = (128, 128)


def _rate(fn, n: int) -> float:
    fn()  # warm-up (first render creates the GL context)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def bench_metaworld(task: str, steps: int) -> dict[str, float]:
    from vlastack.envs import make_env

    env = make_env(f"metaworld/{task}", image_size=SIZE, seed=0, max_steps=500)
    raw = env._raw  # the bare MuJoCo env, already set up with the same render settings
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps + 1, 4)).astype(np.float32)

    def raw_step():
        if raw.curr_path_length >= 499:
            raw.reset()
        raw.step(actions[raw.curr_path_length % steps])
        raw.render()

    state = {"i": 0}

    def adapter_step():
        if env._steps >= 499:
            env.reset()
        env.step(actions[state["i"] % steps])
        state["i"] += 1

    env.reset(seed=0)
    raw_hz = _rate(raw_step, steps)
    env.reset(seed=0)
    adapter_hz = _rate(adapter_step, steps)
    raw_hz2 = _rate(raw_step, steps)  # again, to average out machine-load drift
    env.close()
    raw_hz = (raw_hz + raw_hz2) / 2
    return {"raw_hz": raw_hz, "adapter_hz": adapter_hz, "overhead": 1 - adapter_hz / raw_hz}


def bench_pusht(steps: int) -> dict[str, float]:
    from vlastack.envs import make_env

    env = make_env("pusht", image_size=SIZE, seed=0)
    raw = env._raw
    rng = np.random.default_rng(0)
    actions = rng.uniform(100, 400, (steps + 1, 2))
    state = {"i": 0}

    def raw_step():
        raw.step(actions[state["i"] % steps])
        state["i"] += 1

    def adapter_step():
        if env._steps >= env.max_steps - 1:
            env.reset()
        env.step(actions[state["i"] % steps])
        state["i"] += 1

    raw.reset(seed=0)
    raw_hz = _rate(raw_step, steps)
    env.reset(seed=0)
    adapter_hz = _rate(adapter_step, steps)
    env.close()
    return {"raw_hz": raw_hz, "adapter_hz": adapter_hz, "overhead": 1 - adapter_hz / raw_hz}


def bench_collect(env_name: str, episodes: int, workers: int) -> dict[str, float]:
    from vlastack.envs.collect import collect

    out = tempfile.mkdtemp(prefix="bench_collect_")
    try:
        s = collect(
            env_name,
            os.path.join(out, "ds"),
            episodes_per_task=episodes,
            workers=workers,
            image_size=SIZE,
            progress=False,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"frames": s.new_frames, "wall_s": s.wall_s, "frames_per_s": s.frames_per_s}


def raw_expert_loop(env_name: str, episodes: int) -> dict[str, float]:
    """The same demonstrations as ``collect`` without vlastack: per task, build the simulator,
    then for each attempt step the bare MuJoCo env with the scripted expert and render a frame
    per step (no observation contract, no dataset writing). Construction is timed on both sides:
    a hand-written collection script pays it too. Attempt seeds and the stopping rule (success or
    500 steps) are collect's, so both sides simulate the same frames."""
    from vlastack.envs import list_tasks, make_env
    from vlastack.envs.collect import attempt_seed
    from vlastack.envs.experts import make_expert

    t0 = time.perf_counter()
    frames = 0
    for task in list_tasks(env_name):
        env = make_env(task, image_size=SIZE, seed=0)  # only MT1 construction + render settings
        raw = env._raw
        kept = attempt = 0
        while kept < episodes and attempt < 3 * episodes:
            seed = attempt_seed(0, task, attempt)
            expert = make_expert(env, noise=0.1, seed=seed)
            _, info = env.reset(seed=seed)  # seeds the layout; one call per episode
            obs = info["raw_obs"]
            success = False
            for _ in range(env.max_steps):
                raw.render()
                obs, _, _, _, raw_info = raw.step(expert.act(obs))
                frames += 1
                if raw_info.get("success", 0.0) > 0.5:
                    success = True
                    break
            kept += success
            attempt += 1
        env.close()
    wall = time.perf_counter() - t0
    return {"frames": frames, "wall_s": wall, "frames_per_s": frames / wall}


def expert_table(seeds: int) -> dict[str, dict[str, float]]:
    from vlastack.envs import difficulty_of, list_tasks, make_env

    rows: dict[str, dict[str, float]] = {}
    for name in list_tasks("metaworld/mt50"):
        env = make_env(name, image_size=(16, 16), seed=0)  # tiny render: experts read state
        expert = env.make_expert(noise=0.1)
        wins, lens = 0, []
        for s in range(seeds):
            _, info = env.reset(seed=s)
            expert.reset(seed=s)
            steps = 0
            for steps in range(1, env.max_steps + 1):  # noqa: B007 - steps is used below
                _, _, term, trunc, info = env.step(expert.act(info["raw_obs"]))
                if term or trunc:
                    break
            wins += info["success"]
            lens.append(steps)
        env.close()
        rows[name] = {
            "difficulty": difficulty_of(name),
            "success": wins / seeds,
            "mean_steps": float(np.mean(lens)),
        }
        print(
            f"  {name:40s} {rows[name]['success']:.2f} {rows[name]['mean_steps']:.0f}", flush=True
        )
    return rows


def pusht_expert(episodes: int) -> dict[str, float]:
    from vlastack.envs import make_env
    from vlastack.envs.pusht import TEST_SEEDS

    env = make_env("pusht", image_size=(96, 96))
    expert = env.make_expert()
    wins, best_rewards, lens = 0, [], []
    for seed in TEST_SEEDS[:episodes]:
        _, info = env.reset(seed=seed)
        expert.reset(seed=seed)
        best = 0.0
        steps = 0
        for steps in range(1, env.max_steps + 1):  # noqa: B007 - steps is used below
            _, reward, term, trunc, info = env.step(expert.act(info["raw_obs"]))
            best = max(best, reward)
            if term or trunc:
                break
        wins += info["success"]
        best_rewards.append(best)
        lens.append(steps)
    env.close()
    return {
        "episodes": episodes,
        "success": wins / episodes,
        "mean_max_reward": float(np.mean(best_rewards)),
        "mean_steps": float(np.mean(lens)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--collect-env", default="metaworld/mt10")
    p.add_argument("--collect-episodes", type=int, default=1, help="per task")
    p.add_argument("--experts", type=int, default=0, help="seeds per Meta-World task (0 = skip)")
    p.add_argument("--pusht-episodes", type=int, default=0, help="PushT test seeds (0 = skip)")
    args = p.parse_args()

    res: dict[str, object] = {"machine": f"{os.cpu_count()} CPU cores", "image_size": list(SIZE)}
    print(f"{'adapter':28s} {'raw steps/s':>12s} {'vlastack steps/s':>17s} {'overhead':>9s}")
    for label, fn in (
        ("metaworld/drawer-open-v3", lambda: bench_metaworld("drawer-open-v3", args.steps)),
        ("metaworld/pick-place-v3", lambda: bench_metaworld("pick-place-v3", args.steps)),
        ("pusht", lambda: bench_pusht(args.steps)),
    ):
        r = fn()
        res[label] = r
        print(f"{label:28s} {r['raw_hz']:12.1f} {r['adapter_hz']:17.1f} {r['overhead']:9.1%}")

    print(f"\ncollect {args.collect_env}, {args.collect_episodes} episode(s)/task, 128x128")
    print("raw = the same expert episodes stepped and rendered on the bare simulator, no writing")
    print(f"{'run':>10s} {'frames':>8s} {'wall s':>8s} {'frames/s':>9s} {'vs raw':>7s}")
    runs = {}
    # raw, 1 worker, 2 workers, then raw again: the two raw runs bracket the collect runs so
    # machine-load drift shows up as a raw-vs-raw difference instead of as overhead
    for label in ("raw", "workers1", "workers2", "raw2"):
        if label.startswith("raw"):
            runs[label] = raw_expert_loop(args.collect_env, args.collect_episodes)
        else:
            runs[label] = bench_collect(args.collect_env, args.collect_episodes, int(label[-1]))
    raw_fps = (runs["raw"]["frames_per_s"] + runs["raw2"]["frames_per_s"]) / 2
    for label, r in runs.items():
        r["vs_raw"] = r["frames_per_s"] / raw_fps
        res[f"collect_{label}"] = r
        print(
            f"{label:>10s} {r['frames']:8.0f} {r['wall_s']:8.1f} {r['frames_per_s']:9.1f} "
            f"{r['vs_raw']:7.2f}"
        )
    res["collect_overhead_1worker"] = 1 - runs["workers1"]["frames_per_s"] / raw_fps
    if args.experts:
        print(f"\nMeta-World expert success, noise 0.1, {args.experts} seeds/task")
        rows = expert_table(args.experts)
        res["experts"] = rows
        res["experts_mean_success"] = float(np.mean([r["success"] for r in rows.values()]))
        print(f"  mean over 50 tasks: {res['experts_mean_success']:.3f}")
    if args.pusht_episodes:
        r = pusht_expert(args.pusht_episodes)
        res["pusht_expert"] = r
        print(f"\nPushT planner on test seeds: {r}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
