"""Robot-side loop: a remote policy server + the action runtime at a fixed control rate.

Start a server (`vlastack serve CHECKPOINT` or, to try it, `vlastack serve --toy libero`), then:

    python examples/robot_client.py --port 8000 --strategy async --control-hz 20

The robot here is a stand-in (random images, state that follows the commanded action); replace
`read_observation` and `send_action` with your robot's I/O. openpi's own client
(`openpi_client.WebsocketClientPolicy`) works the same way in place of `PolicyClient`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlastack.serving.client import PolicyClient
from vlastack.serving.runtime import make_runtime


def read_observation(rng: np.random.Generator, state: np.ndarray) -> dict:
    return {
        "observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        "observation/state": state.astype(np.float32),
        "prompt": "pick up the black bowl",
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--strategy", default="async", choices=["sync", "ensemble", "async"])
    ap.add_argument("--control-hz", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()

    client = PolicyClient(args.host, args.port, api_key=args.api_key)
    print("server metadata:", client.metadata)
    kwargs = {"control_hz": args.control_hz} if args.strategy == "async" else {}
    runtime = make_runtime(args.strategy, client, **kwargs)
    rng, state = np.random.default_rng(0), np.zeros(8)
    period_s, late = 1.0 / args.control_hz, 0
    next_tick = time.perf_counter()
    with runtime:
        runtime.reset()
        for _ in range(args.steps):
            action = runtime.step(read_observation(rng, state))
            state[: len(action)] = action  # send_action(action) on a real robot
            next_tick += period_s
            slack = next_tick - time.perf_counter()
            if slack > 0:
                time.sleep(slack)
            else:
                late += 1
    print(
        f"{args.steps} steps at {args.control_hz:g} Hz, {late} late ticks, {runtime.num_inferences} inferences"
    )
    client.close()


if __name__ == "__main__":
    main()
