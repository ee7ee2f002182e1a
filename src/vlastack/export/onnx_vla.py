"""ONNX graphs of the imported flow-matching VLAs (LeRobot SmolVLA, pi0, pi0.5): what
``vlastack export onnx`` writes for their folders and what the ``onnxruntime`` runner runs.

The graphs trace the vlastack modules themselves (``SmolVLAModel`` / ``Pi0Core``: their
``prefix_cache``, ``velocity`` and ``sample_actions``), so the math exists once. Three graphs,
named after the export parts the native heads use:

* ``<kind>_prefix``: the prefix (cameras, language, SmolVLA's state) through the VLM, once per
  chunk -> ``prefix_pad`` (B, P) and the per-layer K/V stacked as ``prefix_k`` / ``prefix_v``
  (SmolVLA (L, B, P, kv_heads, head_dim), pi0 (L, B, kv_heads, P, head_dim)).
* ``<kind>_step``: one velocity evaluation of the action expert over that cache: ``x_t`` (B,
  chunk_size, max_action_dim), ``t`` (B,) float32, the prefix outputs [, pi0's ``state``] ->
  ``velocity``. The caller integrates ``x <- x + dt * v`` from t = 1 (``dt = -1 / num_steps``,
  ``t = 1 + k * dt``; the manifest's ``flow``), as ``pretrained.lerobot.flow.euler_sample``.
* ``<kind>_sampler``: the prefix once, then the ``num_steps`` Euler steps unrolled, from the
  given ``noise`` -> normalized ``actions`` (B, chunk_size, max_action_dim); one call per chunk.

Why this decomposition: the sampler is what serving needs (one onnxruntime call per chunk, the
KV cache never leaves the engine; the ``onnxruntime`` runner uses it); the prefix/step pair is
the same math split where LeRobot splits it (prefill once, the expert ``num_steps`` times), for a
caller that wants another step count, or its own loop around the velocity. Real-time chunking's
guidance differentiates the expert, which an ONNX graph does not, so ``infer_guided`` stays in
PyTorch.

Inputs are what ``sample_actions`` takes: ``images.<i>`` (B, 3, H, W) in [-1, 1] after the
policy's resize-with-pad, ``img_masks.<i>`` (B,) bool, one per camera in the manifest's
``cameras`` order (empty cameras included), ``lang_tokens`` (B, T) int64 and ``lang_masks`` (B,
T) bool, ``state`` (B, max_state_dim) normalized and zero-padded (not for pi0.5, whose state is
in the prompt). Batch and token length T are dynamic; image sizes are the checkpoint's.
Parity (measured on the fixtures' golden inputs, tests/test_export_onnx_vla.py): the sampler's
chunk matches PyTorch's within ~1e-6 absolute (float32), and LeRobot's golden within its
fresh-process tolerance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlastack.export.onnx import ExportedGraph

VLA_FORMATS = ("lerobot_smolvla", "lerobot_pi0", "lerobot_pi05")
GRAPH_PREFIX = {"lerobot_smolvla": "smolvla", "lerobot_pi0": "pi0", "lerobot_pi05": "pi05"}


def _stack(cache: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([k for k, _ in cache]), torch.stack([v for _, v in cache])


def _unstack(k: torch.Tensor, v: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(k[i], v[i]) for i in range(k.shape[0])]


class _VLAGraph(nn.Module):
    """Shared input layout: images, their masks, tokens, token mask, [state], then extras."""

    def __init__(self, model: nn.Module, n_images: int, state: str) -> None:
        super().__init__()
        self.model: Any = model
        self.n_images = n_images
        self.state = state  # "prefix" (SmolVLA), "suffix" (pi0) or "none" (pi0.5)

    def split(self, inputs: tuple[torch.Tensor, ...], prefix_only: bool = False) -> tuple[Any, ...]:
        n = self.n_images
        images, masks = list(inputs[:n]), [m.bool() for m in inputs[n : 2 * n]]
        tokens, lang_mask = inputs[2 * n], inputs[2 * n + 1].bool()
        rest = list(inputs[2 * n + 2 :])
        takes_state = self.state == "prefix" or (self.state == "suffix" and not prefix_only)
        state = rest.pop(0) if takes_state else None
        return images, masks, tokens, lang_mask, state, rest

    def prefix(self, images, masks, tokens, lang_mask, state):
        if self.state == "prefix":
            return self.model.prefix_cache(images, masks, tokens, lang_mask, state)
        return self.model.prefix_cache(images, masks, tokens, lang_mask)

    def velocity(self, x_t, t, cache, pad, state):
        if self.state == "prefix":
            return self.model.velocity(x_t, t, cache, pad)
        return self.model.velocity(x_t, t, cache, pad, state)


class VLAPrefix(_VLAGraph):
    """prefix inputs -> prefix_pad (B, P), prefix_k, prefix_v (L, B, ...)."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        images, masks, tokens, lang_mask, state, _ = self.split(inputs, prefix_only=True)
        cache, pad = self.prefix(images, masks, tokens, lang_mask, state)
        k, v = _stack(cache)
        return pad, k, v


class VLAVelocity(_VLAGraph):
    """x_t, t, prefix_pad, prefix_k, prefix_v [, state] -> velocity (B, chunk, max_action_dim)."""

    def forward(self, x_t, t, prefix_pad, prefix_k, prefix_v, *state: torch.Tensor):
        st = state[0] if state else None
        return self.velocity(x_t, t, _unstack(prefix_k, prefix_v), prefix_pad.bool(), st)


class VLASampler(_VLAGraph):
    """prefix inputs, noise -> normalized actions (B, chunk, max_action_dim); Euler unrolled."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        images, masks, tokens, lang_mask, state, rest = self.split(inputs)
        return self.model.sample_actions(images, masks, tokens, lang_mask, state, rest[0])


def state_role(fmt: str) -> str:
    return {"lerobot_smolvla": "prefix", "lerobot_pi0": "suffix", "lerobot_pi05": "none"}[fmt]


def sample_inputs(
    fmt: str,
    images: list[torch.Tensor],
    masks: list[torch.Tensor],
    tokens: torch.Tensor,
    lang_mask: torch.Tensor,
    state: torch.Tensor | None,
    prefix_only: bool = False,
) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """(input names, tensors) of the sampler graph (``prefix_only``: of the prefix graph, which
    takes pi0's state no more) for ``sample_actions``'s arguments."""
    n = len(images)
    names = [f"images.{i}" for i in range(n)] + [f"img_masks.{i}" for i in range(n)]
    names += ["lang_tokens", "lang_masks"]
    values = [*images, *masks, tokens, lang_mask]
    role = state_role(fmt)
    if role == "prefix" or (role == "suffix" and not prefix_only):
        assert state is not None
        names.append("state")
        values.append(state)
    return names, tuple(values)


def _axes(names: list[str], fmt: str) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in names}
    for n in ("lang_tokens", "lang_masks"):
        if n in axes:
            axes[n] = {0: "batch", 1: "tokens"}
    axes["prefix_pad"] = {0: "batch", 1: "prefix"}
    p = 2 if fmt == "lerobot_smolvla" else 3  # the prefix axis of a stacked K/V
    axes["prefix_k"] = axes["prefix_v"] = {1: "batch", p: "prefix"}
    return axes


def vla_graphs(
    fmt: str,
    model: nn.Module,
    args: tuple[Any, ...],
    noise: torch.Tensor,
    parts: list[str],
) -> list[ExportedGraph]:
    """The graphs ``parts`` selects for ``model`` (``network.model``) on ``sample_actions``'s
    arguments ``args`` = (images, img_masks, tokens, lang_mask, state) and ``noise``."""
    images, masks, tokens, lang_mask, state = args
    names, values = sample_inputs(fmt, images, masks, tokens, lang_mask, state)
    role, n = state_role(fmt), len(images)
    kind = GRAPH_PREFIX[fmt]
    out: list[ExportedGraph] = []
    pnames, pvalues = sample_inputs(fmt, images, masks, tokens, lang_mask, state, True)
    if "prefix" in parts:
        names_out = ["prefix_pad", "prefix_k", "prefix_v"]
        out.append(
            ExportedGraph(
                f"{kind}_prefix",
                VLAPrefix(model, n, role).eval(),
                pvalues,
                pnames,
                names_out,
                _axes([*pnames, *names_out], fmt),
            )
        )
    if "step" in parts:
        pre = VLAPrefix(model, n, role).eval()
        with torch.no_grad():
            pad, k, v = pre(*pvalues)
        t = torch.full((noise.shape[0],), 0.7)
        step_names = ["x_t", "t", "prefix_pad", "prefix_k", "prefix_v"]
        step_values: tuple[torch.Tensor, ...] = (noise, t, pad, k, v)
        if role == "suffix":
            step_names.append("state")
            step_values = (*step_values, values[-1])
        out.append(
            ExportedGraph(
                f"{kind}_step",
                VLAVelocity(model, n, role).eval(),
                step_values,
                step_names,
                ["velocity"],
                _axes([*step_names, "velocity"], fmt),
            )
        )
    if "sampler" in parts:
        out.append(
            ExportedGraph(
                f"{kind}_sampler",
                VLASampler(model, n, role).eval(),
                (*values, noise),
                [*names, "noise"],
                ["actions"],
                _axes([*names, "noise", "actions"], fmt),
            )
        )
    return out


def _gen_tokens(
    batch: int, length: int, vocab: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (B, length) and a right-padded mask (each row at least 4 real tokens)."""
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    n = torch.randint(min(4, length), length + 1, (batch,), generator=g)
    mask = torch.arange(length)[None, :] < n[:, None]
    return torch.where(mask, ids, 0), mask


def example_args(
    policy: Any, fmt: str, batch: int = 1, seed: int = 0
) -> tuple[tuple, torch.Tensor]:
    """Random ``sample_actions`` arguments (images, img_masks, tokens, lang_mask, state) of
    ``policy``'s shapes, made as its ``prepare`` makes them (no tokenizer needed: the ids are
    random below the vocabulary size, the token length the tokenizer's ``max_length``), and
    noise (B, chunk_size, max_action_dim)."""
    g = torch.Generator().manual_seed(seed)
    s = policy.spec
    if fmt == "lerobot_smolvla":
        pre = {k: torch.rand(batch, *policy.input_shapes[k], generator=g) for k in s.cameras}
        pre[s.state_key] = torch.randn(batch, s.state_dim, generator=g)
        images, masks, state = policy.prepare(pre)
        vocab = (
            policy.network.model.vlm_with_expert.vlm.model.text_model.embed_tokens.num_embeddings
        )
        length = int(policy.tokenizer_step.max_length)
    else:
        from vlastack.pretrained.lerobot.pi0_inputs import pad_state

        images, masks = [], []
        for key in policy.image_keys:
            empty = key.startswith("observation.images.empty_camera_")
            img = torch.rand(batch, 3, s.image_size, s.image_size, generator=g) * 2 - 1
            images.append(-torch.ones_like(img) if empty else img)
            masks.append(torch.full((batch,), not empty, dtype=torch.bool))
        raw = torch.randn(batch, policy.state_dim, generator=g)
        state = None if s.pi05 else pad_state(raw, s.max_state_dim)
        lm = policy.network.model.paligemma_with_expert.language_model
        vocab, length = lm.embed_tokens.num_embeddings, int(policy.processors.max_length)
    tokens, lang_mask = _gen_tokens(batch, length, int(vocab), g)
    chunk, width = s.chunk_size, s.max_action_dim
    noise = torch.randn(batch, chunk, width, generator=g)
    return (images, masks, tokens, lang_mask, state), noise


def num_steps(model: Any) -> int:
    """The Euler step count of ``network.model`` (SmolVLA ``num_steps``, pi0 ``num_inference_steps``)."""
    spec = model.spec
    return int(getattr(spec, "num_steps", None) or spec.num_inference_steps)


def spec_json(policy: Any, fmt: str) -> dict[str, Any]:
    """The manifest's ``policy`` section: graph input order and what the caller does around it."""
    s = policy.spec
    steps = num_steps(policy.network.model)
    if fmt == "lerobot_smolvla":
        cameras = [*s.cameras, *(k for k in s.image_keys if k not in s.cameras)]
        h, w = (s.resize[1], s.resize[0]) if s.resize else tuple(s.image_shapes[0][1:])
        tok = policy.tokenizer_step
        out: dict[str, Any] = {
            "action_key": s.action_key,
            "action_dim": int(s.action_dim),
            "state_key": s.state_key,
            "state_dim": int(s.state_dim),
            "tokenizer": {
                "name": tok.tokenizer_name,
                "max_length": tok.max_length,
                "padding": tok.padding,
                "newline": policy.newline,
            },
            "resize": "resize_with_pad: keep aspect, pad LEFT and TOP with 0, then x * 2 - 1",
        }
    else:
        cameras = list(policy.image_keys)
        h = w = s.image_size
        p = policy.processors
        out = {
            "action_key": policy.action_key,
            "action_dim": int(policy.action_dim),
            "state_key": policy.state_key,
            "state_dim": int(policy.state_dim),
            "tokenizer": {
                "name": p.tokenizer_name,
                "max_length": p.max_length,
                "state_in_prompt": bool(s.pi05),
                "new_line": p.new_line,
            },
            "relative_actions": bool(p.relative),
            "resize": "pi0_inputs.resize_with_pad to a square, then x * 2 - 1",
        }
    out.update(
        cameras=cameras,
        empty_cameras=[k for k in cameras if k.startswith("observation.images.empty_camera_")],
        image_hw=[int(h), int(w)],
        chunk_size=int(s.chunk_size),
        n_action_steps=int(s.n_action_steps),
        max_state_dim=int(s.max_state_dim),
        max_action_dim=int(s.max_action_dim),
        state_input=state_role(fmt),
        flow={
            "num_steps": steps,
            "loop": "x = noise; for k in range(num_steps): t = float32(1 + k * dt); "
            "x = x + dt * step(x, t, prefix...), dt = -1 / num_steps",
            "reference": "vlastack.pretrained.lerobot.flow.euler_sample",
        },
        actions="the first action_dim columns of the sampler's output (or the loop's x) are "
        "the normalized chunk; unnormalize with normalization.unnormalizer",
    )
    return out


__all__ = [
    "GRAPH_PREFIX",
    "VLAPrefix",
    "VLASampler",
    "VLAVelocity",
    "VLA_FORMATS",
    "example_args",
    "num_steps",
    "sample_inputs",
    "spec_json",
    "state_role",
    "vla_graphs",
]
