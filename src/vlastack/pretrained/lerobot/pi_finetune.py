"""Fine-tuning imported LeRobot pi0 / pi0.5 (``vlastack train --init-from FOLDER``): the trainable
model (``training.parts.TrainablePolicy``) and its registration with ``finetune``.

* ``loss`` is LeRobot 0.6.1's ``PI0Policy.forward`` / ``PI05Policy.forward`` loss
  (``pi0_train.flow_matching_loss``, verified against LeRobot in
  tests/test_pretrained_lerobot_pi0.py), averaged over the real action dims (LeRobot's pi0
  ignores ``action_is_pad``); the inputs are what ``LeRobotPi0Policy.preprocess`` makes of an
  observation, from the normalized batch: the prompt (pi0: the task with a newline where the
  processor adds one; pi0.5: the task plus the discretized normalized state), the tokenizer,
  every camera resized with padding to [-1, 1] (missing ones -1 with mask False), pi0's state
  zero-padded to ``max_state_dim``. Noise and time come from torch's global generator (exact
  resume) unless given. ``use_relative_actions`` checkpoints are refused (not wired yet).
* freeze groups: ``vision`` (the SigLIP tower), ``vlm`` (PaliGemma: vision, projector, Gemma),
  ``expert`` (the Gemma expert and the action / state / time projections); config.json's
  ``freeze_vision_encoder`` / ``train_expert_only`` (LeRobot's flags) are applied at build and
  printed. ``lora_target``: PaliGemma's language-model attention and MLP projections.
* The two ``lm_head`` matrices LeRobot saves (unused by the action loss) ride along as buffers
  under their LeRobot keys, so the run's ``model.safetensors`` holds every key and
  ``vlastack export lerobot`` writes a complete folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.finetune import Built, _as_folder, register_fine_tunable
from vlastack.pretrained.lerobot.flow import sample_time
from vlastack.pretrained.lerobot.pi0_inputs import (
    pad_state,
    pi0_prompt,
    pi05_prompt,
    resize_with_pad,
)
from vlastack.pretrained.lerobot.pi0_train import flow_matching_loss
from vlastack.pretrained.lerobot.vla_finetune import VLASpec, vla_param_groups

Batch = dict[str, Any]
PWE = "model.paligemma_with_expert."
VLM = PWE + "paligemma."
VISION = VLM + "model.vision_tower."
EXPERT = (
    PWE + "gemma_expert.",
    "model.state_proj.",
    "model.action_in_proj.",
    "model.action_out_proj.",
    "model.action_time_mlp_in.",
    "model.action_time_mlp_out.",
    "model.time_mlp_in.",
    "model.time_mlp_out.",
)


class Pi0Trainable(nn.Module):
    """LeRobot pi0 / pi0.5 for training; ``self.model`` is the inference ``Pi0Core``."""

    lora_target = (
        r"model\.paligemma_with_expert\.paligemma\.model\.language_model\.layers\.\d+\."
        r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    )

    def __init__(self, policy: Any, heads: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = policy.network.model
        self._policy = policy
        self.policy_type = policy.policy_type
        self.spec = policy.spec
        for key, t in heads.items():  # 'model.paligemma_with_expert.<tower>.lm_head.weight'
            owner: Any = self
            *path, leaf = key.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(leaf, t)

    def _inputs(self, batch: Batch) -> tuple[Any, ...]:
        pol, p, s = self._policy, self._policy.processors, self.spec
        state = batch[pol.state_key]
        b = state.shape[0]
        tasks = [str(t) for t in (batch.get("task") or [""] * b)]
        if p.clean_prompt:
            tasks = [t.strip().replace("_", " ").replace("\n", " ") for t in tasks]
        if s.pi05:
            st = state.detach().cpu().numpy()
            prompts = [pi05_prompt(t, st[i]) for i, t in enumerate(tasks)]
        else:
            prompts = [pi0_prompt(t) if p.new_line else t for t in tasks]
        ids, mask = pol.tokenizer(prompts, p.max_length)
        images, masks = [], []
        for key in pol.image_keys:
            if key in batch:
                images.append(resize_with_pad(batch[key], s.image_size))
                masks.append(torch.ones(b, dtype=torch.bool, device=state.device))
        for key in pol.image_keys:
            if key not in batch:
                images.append(torch.ones_like(images[0]) * -1)
                masks.append(torch.zeros(b, dtype=torch.bool, device=state.device))
        padded = None if s.pi05 else pad_state(state, s.max_state_dim)
        return images, masks, ids.to(state.device), mask.to(state.device), padded

    def loss(
        self,
        batch: Batch,
        noise: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        images, masks, ids, mask, state = self._inputs(batch)
        a = pad_state(batch[self._policy.action_key].to(torch.float32), self.spec.max_action_dim)
        if noise is None:
            noise = torch.randn(a.shape, device=a.device)
        if time is None:
            time = sample_time(a.shape[0]).to(a.device)
        out = flow_matching_loss(self.model, images, masks, ids, mask, state, a, noise, time)
        return out[:, :, : self._policy.action_dim].mean()

    def sample_actions(self, batch: Batch) -> torch.Tensor:
        """(B, chunk_size, action_dim) normalized, from N(0, 1) noise."""
        images, masks, ids, mask, state = self._inputs(batch)
        s = self.spec
        noise = torch.randn(ids.shape[0], s.chunk_size, s.max_action_dim, device=ids.device)
        out = self.model.sample_actions(images, masks, ids, mask, state, noise)
        return out[:, :, : self._policy.action_dim]

    def param_groups(self) -> dict[str, list[str]]:
        return vla_param_groups(self, VISION, VLM, EXPERT)


def _build_pi(path: Path, cfg: dict[str, Any], device: Any) -> Built:
    from safetensors import safe_open

    from vlastack.pretrained.lerobot.paligemma import UNUSED_HEADS
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

    policy = load_lerobot_pi0(path, device=device)
    if policy.processors.relative:
        raise ConfigError(
            f"{path / lf.CONFIG}: use_relative_actions is true; fine-tuning a pi0 with "
            "relative actions is not supported yet (inference is)"
        )
    with safe_open(str(path / lf.WEIGHTS), framework="pt") as f:
        heads = {k: f.get_tensor(k) for k in UNUSED_HEADS if k in f.keys()}  # noqa: SIM118
    model = Pi0Trainable(policy, heads).to(device)
    groups = model.param_groups()
    params = dict(model.named_parameters())
    for flag, group in (("freeze_vision_encoder", "vision"), ("train_expert_only", "vlm")):
        if cfg.get(flag):
            for n in groups[group]:
                params[n].requires_grad_(False)
            print(
                f"frozen by config.json {flag}=true (group {group!r}): {len(groups[group])} tensors"
            )
    cams = [k for k in policy.image_keys if k in policy.shapes]
    shapes = {tuple(policy.shapes[k]) for k in cams}
    if len(shapes) > 1:
        raise ConfigError(
            f"{path / lf.CONFIG}: cameras of different sizes ({sorted(shapes)}); fine-tuning "
            "reads every camera at one size: give the VISUAL input_features one shape"
        )
    s = policy.spec
    spec = VLASpec(
        tuple(cams),
        tuple(policy.shapes[cams[0]]),
        policy.state_key,
        policy.state_dim,
        None,
        policy.action_key,
        policy.action_dim,
        s.n_action_steps,
    )
    return Built(model, spec, 1, 0, s.chunk_size, squeeze_obs=True, processors=policy.processors)


def _pi_policy(fj: lf.FolderJSON, procs: Any, ckpt: Path, device: Any, emb: Any, seed: int) -> Any:
    """The fine-tuned checkpoint as ``LeRobotPi0Policy``: its LeRobot folder assembled in a
    temporary directory (JSON, stats, a link to the weights) and loaded as an imported one; the
    tokenizer is found as for an imported folder (``pi0_inputs.load_tokenizer``)."""
    from vlastack.pretrained.lerobot.pi0_policy import load_lerobot_pi0

    del procs
    model = json.loads((ckpt / "config.json").read_text()).get("model") or {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pretrained_model"
        _as_folder(ckpt, model, folder)
        policy = load_lerobot_pi0(folder, device=device, seed=seed)
    policy.checkpoint = str(ckpt)
    policy.embodiment_dict = emb
    policy.folder_json = fj
    return policy


register_fine_tunable("pi0", _build_pi, _pi_policy)
register_fine_tunable("pi05", _build_pi, _pi_policy)
