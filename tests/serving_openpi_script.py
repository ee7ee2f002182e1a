"""Run by tests/test_serving_openpi.py with the .venv-openpi interpreter (real openpi-client 0.1.2).

Talks to a vlastack server with WebsocketClientPolicy, ActionChunkBroker and runtime.Runtime
unchanged, in one of the observation styles of openpi's examples, and writes what it sent and got
(packed with openpi's own msgpack_numpy) to the output file for the test to check.
"""

import sys

import numpy as np
from openpi_client import action_chunk_broker, msgpack_numpy, websocket_client_policy
from openpi_client.runtime import environment, runtime
from openpi_client.runtime.agents import policy_agent

port, style, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
api_key = sys.argv[4] if len(sys.argv) > 4 else None
rng = np.random.RandomState(7)


def image(chw=False, size=224):
    shape = (3, size, size) if chw else (size, size, 3)
    return rng.randint(0, 256, shape).astype(np.uint8)


def make_obs():
    if style == "libero":  # examples/libero/main.py
        return {
            "observation/image": image(),
            "observation/wrist_image": image(),
            "observation/state": rng.normal(size=8),  # float64, as the example sends it
            "prompt": "put the bowl on the plate",
        }
    if style == "aloha":  # examples/aloha_sim: CHW images in a nested dict, no prompt
        return {
            "state": rng.normal(size=14).astype(np.float32),
            "images": {"cam_high": image(chw=True)},
        }
    if style == "droid":  # examples/droid/main.py
        return {
            "observation/exterior_image_1_left": image(),
            "observation/wrist_image_left": image(),
            "observation/joint_position": rng.normal(size=7),
            "observation/gripper_position": rng.uniform(size=1),
            "prompt": "open the drawer",
        }
    raise SystemExit(f"unknown style {style}")


class Env(environment.Environment):
    def __init__(self):
        self.steps, self.obs, self.actions = 0, [], []

    def reset(self):
        self.steps = 0

    def is_episode_complete(self):
        return False

    def get_observation(self):
        self.obs.append(make_obs())
        return self.obs[-1]

    def apply_action(self, action):
        self.actions.append(action)
        self.steps += 1


record = {}
client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=api_key)
record["metadata"] = client.get_server_metadata()

direct_obs = [make_obs() for _ in range(2)]
record["direct_obs"] = direct_obs
record["direct_out"] = [client.infer(o) for o in direct_obs]

# A bad observation: openpi's client raises RuntimeError on a text frame; with our server the
# same client object keeps working afterwards.
bad = dict(direct_obs[0])
bad.pop("observation/state", None)
bad.pop("state", None)
bad.pop("observation/joint_position", None)
try:
    client.infer(bad)
    record["error"] = ""
except RuntimeError as exc:
    record["error"] = str(exc)
record["after_error"] = client.infer(direct_obs[1])

env = Env()
broker = action_chunk_broker.ActionChunkBroker(policy=client, action_horizon=4)
rt = runtime.Runtime(
    environment=env,
    agent=policy_agent.PolicyAgent(policy=broker),
    subscribers=[],
    max_hz=0,
    num_episodes=1,
    max_episode_steps=10,
)
rt.run()
record["runtime_obs"] = env.obs
record["runtime_actions"] = env.actions

with open(out_path, "wb") as f:
    f.write(msgpack_numpy.packb(record))
print("ok", len(env.actions))
