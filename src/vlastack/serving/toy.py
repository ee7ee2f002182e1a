"""Small deterministic policies for testing and benchmarking the server and the runtime.

``ToyPolicy`` maps an observation to an action chunk with a fixed random linear map (seeded), so
served and in-process results can be compared bit for bit; it validates its inputs like a real
policy would (short ``ProtocolError`` messages) and can sleep to imitate inference latency.
Presets follow the observation styles of openpi's LIBERO, ALOHA and DROID examples (§1.6).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from vlastack.serving.protocol import FieldSpec, validate_observation

_IMG_HWC = FieldSpec(shape=(None, None, 3), kinds="u")
_IMG_CHW = FieldSpec(shape=(3, None, None), kinds="u")

STYLES: dict[str, dict] = {
    "libero": {
        "schema": {
            "observation/image": _IMG_HWC,
            "observation/wrist_image": _IMG_HWC,
            "observation/state": FieldSpec(shape=(8,), kinds="fi"),
            "prompt": FieldSpec(kinds="U", required=False),
        },
        "state_keys": ["observation/state"],
        "image_keys": ["observation/image", "observation/wrist_image"],
        "action_dim": 7,
    },
    "aloha": {
        "schema": {
            "state": FieldSpec(shape=(14,), kinds="fi"),
            "images/cam_high": _IMG_CHW,
            "images/cam_low": FieldSpec(shape=(3, None, None), kinds="u", required=False),
            "images/cam_left_wrist": FieldSpec(shape=(3, None, None), kinds="u", required=False),
            "images/cam_right_wrist": FieldSpec(shape=(3, None, None), kinds="u", required=False),
            "prompt": FieldSpec(kinds="U", required=False),
        },
        "state_keys": ["state"],
        "image_keys": ["images/cam_high"],
        "action_dim": 14,
    },
    "droid": {
        "schema": {
            "observation/exterior_image_1_left": _IMG_HWC,
            "observation/wrist_image_left": _IMG_HWC,
            "observation/joint_position": FieldSpec(shape=(7,), kinds="fi"),
            "observation/gripper_position": FieldSpec(shape=(1,), kinds="fi"),
            "prompt": FieldSpec(kinds="U", required=False),
        },
        "state_keys": ["observation/joint_position", "observation/gripper_position"],
        "image_keys": ["observation/exterior_image_1_left", "observation/wrist_image_left"],
        "action_dim": 8,
    },
}


def style_dims(style: str) -> tuple[int, int]:
    """(state_dim, action_dim) a client of this openpi style sends and expects."""
    cfg = STYLES[style]
    schema = cfg["schema"]
    state = sum(int(np.prod(schema[k].shape or (1,))) for k in cfg["state_keys"])
    return state, int(cfg["action_dim"])


def _get(obs: Mapping, key: str):
    if key in obs:
        return obs[key]
    node = obs
    for part in key.split("/"):
        node = node[part]
    return node


class ToyPolicy:
    """actions[h] = tanh(W @ state + b + c * mean(images)) + 0.01 * h, float32 (H, A).

    Deterministic for a given ``seed``; ``delay_s`` sleeps inside ``infer`` (per call, also per
    ``infer_batch`` call, which is what makes batching pay off as for a real GPU policy).
    """

    def __init__(
        self,
        style: str = "libero",
        action_horizon: int = 10,
        seed: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        cfg = STYLES[style]
        self.style = style
        self.schema: dict[str, FieldSpec] = cfg["schema"]
        self.state_keys: list[str] = cfg["state_keys"]
        self.image_keys: list[str] = cfg["image_keys"]
        self.action_dim: int = cfg["action_dim"]
        self.action_horizon = action_horizon
        self.delay_s = delay_s
        state_dim = style_dims(style)[0]
        rng = np.random.default_rng(seed)
        self._w = rng.normal(0, 0.5, (self.action_dim, state_dim))
        self._b = rng.normal(0, 0.1, self.action_dim)
        self._c = rng.normal(0, 0.2, self.action_dim)
        self.num_resets = 0
        self.metadata = {
            "policy": "ToyPolicy",
            "style": style,
            "action_horizon": action_horizon,
            "action_dim": self.action_dim,
            "seed": seed,
        }

    def reset(self) -> None:
        self.num_resets += 1

    def _actions(self, obs: Mapping) -> np.ndarray:
        validate_observation(obs, self.schema)
        state = np.concatenate(
            [np.asarray(_get(obs, k), np.float64).ravel() for k in self.state_keys]
        )
        img = np.mean(
            [np.asarray(_get(obs, k), np.float64).mean() / 255.0 for k in self.image_keys]
        )
        base = np.tanh(self._w @ state + self._b + self._c * img)
        steps = 0.01 * np.arange(self.action_horizon)[:, None]
        return (base[None, :] + steps).astype(np.float32)

    def infer(self, obs: dict) -> dict:
        actions = self._actions(obs)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return {"actions": actions}

    def infer_batch(self, batch: list[dict]) -> list[dict]:
        chunks = [self._actions(obs) for obs in batch]
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        return [{"actions": a} for a in chunks]


def example_observation(
    style: str = "libero",
    seed: int = 0,
    image_size: int = 224,
    prompt: str | None = "pick up the cube",
) -> dict:
    """An observation dict as openpi's example clients send it (§1.6)."""
    rng = np.random.default_rng(seed)

    def img(chw: bool = False) -> np.ndarray:
        shape = (3, image_size, image_size) if chw else (image_size, image_size, 3)
        return rng.integers(0, 256, shape, dtype=np.uint8)

    if style == "libero":
        obs: dict = {
            "observation/image": img(),
            "observation/wrist_image": img(),
            "observation/state": rng.normal(size=8).astype(np.float32),
        }
    elif style == "aloha":
        obs = {
            "state": rng.normal(size=14).astype(np.float32),
            "images": {
                c: img(chw=True)
                for c in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
            },
        }
    elif style == "droid":
        obs = {
            "observation/exterior_image_1_left": img(),
            "observation/wrist_image_left": img(),
            "observation/joint_position": rng.normal(size=7),
            "observation/gripper_position": rng.uniform(size=1),
        }
    else:
        raise ValueError(f"unknown style {style!r}; choose from {sorted(STYLES)}")
    if prompt is not None:
        obs["prompt"] = prompt
    return obs


class GaussianVelocity:
    """Exact flow velocity (openpi convention) when the data chunk is Gaussian: A ~ N(μ, Σ ⊗ I_A).

    With x_t = (1−t)·A + t·ε: S_t = (1−t)²Σ + t²I, E[A|x] = μ + (1−t)ΣS⁻¹(x − (1−t)μ),
    E[ε|x] = tS⁻¹(x − (1−t)μ), and v = E[ε − A | x] is linear in x — a toy on which RTC's guidance
    can be checked exactly. mean (B, H, A) or (H, A); cov (H, H) over time, shared by action dims.
    """

    def __init__(self, mean, cov, eig=None) -> None:
        import torch

        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        lam, u = (
            eig if eig is not None else torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
        )
        self._lam, self._u = lam.clamp_min(1e-9), u

    def velocity(self, x_t, t):
        t_ = t.reshape(-1, 1, 1).to(x_t)  # (B, 1, 1)
        mu = self.mean.to(x_t)
        r = x_t - (1 - t_) * mu  # (B, H, A)
        r_eig = self._u.T.to(x_t) @ r  # eigenbasis of Σ over time
        lam = self._lam.to(x_t).view(1, -1, 1)
        s_inv_r = r_eig / ((1 - t_) ** 2 * lam + t_**2)
        e_eps = t_ * s_inv_r
        e_a = (1 - t_) * lam * s_inv_r
        return self._u.to(x_t) @ (e_eps - e_a) - mu


def smooth_cov(action_horizon: int, sigma: float, length_ticks: float) -> np.ndarray:
    """σ² · exp(−(i−j)²/(2ℓ²)) + jitter: smooth per-chunk model error over the chunk's steps."""
    i = np.arange(action_horizon)
    cov = sigma**2 * np.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * length_ticks**2))
    return cov + 1e-6 * np.eye(action_horizon)


class FlowTrackingPolicy:
    """A flow-matching "policy" for the delay harness: chunks ~ N(target ahead, smooth error).

    ``infer`` reads ``obs["time_s"]``, sets μ[i] = target(time_s + i/control_hz) and samples with
    ``num_steps`` Euler steps of ``GaussianVelocity``; each chunk carries its own smooth random
    error (std ``sigma``), so consecutive chunks disagree as a trained policy's do.
    ``infer_guided`` samples the same way with RTC guidance. ``delay_s`` imitates network time.
    """

    def __init__(
        self,
        target,
        control_hz: float,
        action_horizon: int,
        sigma: float = 0.05,
        length_ticks: float | None = None,
        num_steps: int = 10,
        delay_s: float = 0.0,
        seed: int = 0,
        max_guidance_weight: float = 5.0,
    ) -> None:
        import torch

        self.target = target
        self.control_hz = control_hz
        self.action_horizon = action_horizon
        self.cov = smooth_cov(action_horizon, sigma, length_ticks or action_horizon / 4)
        self._eig = torch.linalg.eigh(torch.as_tensor(self.cov))
        self.num_steps = num_steps
        self.delay_s = delay_s
        self.max_guidance_weight = max_guidance_weight
        self._seed = seed
        self._gen = torch.Generator().manual_seed(seed)
        self.metadata = {"policy": "FlowTrackingPolicy", "action_horizon": action_horizon}

    def reset(self) -> None:
        self._gen.manual_seed(self._seed)

    def _model(self, obs: dict):
        time_s = float(obs["time_s"])
        mean = np.stack(
            [self.target(time_s + i / self.control_hz) for i in range(self.action_horizon)]
        )
        return GaussianVelocity(mean, self.cov, self._eig), mean

    def _sample(
        self,
        obs: dict,
        prev: np.ndarray | None,
        delay: int,
        max_guidance_weight: float | None = None,
        schedule: str = "exp",
    ) -> dict:
        import torch

        from vlastack.serving.runtime import guided_flow_sample

        t0 = time.perf_counter()
        model, mean = self._model(obs)
        noise = torch.randn((1, *mean.shape), generator=self._gen, dtype=torch.float64)
        prev_t = (
            torch.zeros((0, mean.shape[1]), dtype=torch.float64)
            if prev is None
            else torch.as_tensor(prev)
        )
        gw = self.max_guidance_weight if max_guidance_weight is None else max_guidance_weight
        gw = 0.0 if prev is None else gw
        x = guided_flow_sample(
            model, noise, prev_t, delay, self.num_steps, max_guidance_weight=gw, schedule=schedule
        )
        if self.delay_s > 0:
            time.sleep(max(0.0, self.delay_s - (time.perf_counter() - t0)))
        return {"actions": x[0].numpy()}

    def infer(self, obs: dict) -> dict:
        return self._sample(obs, None, 0)

    def infer_guided(
        self,
        obs: dict,
        prev_actions: np.ndarray,
        inference_delay: int,
        *,
        max_guidance_weight: float | None = None,
        schedule: str = "exp",
    ) -> dict:
        prev = np.asarray(prev_actions, dtype=np.float64)
        return self._sample(obs, prev, inference_delay, max_guidance_weight, schedule)
