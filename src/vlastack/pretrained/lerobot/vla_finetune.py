"""Fine-tuning imported LeRobot SmolVLA (``vlastack train --init-from FOLDER``): the trainable
model (``training.parts.TrainablePolicy``) and its registration with ``finetune``.

* ``loss`` is LeRobot 0.6.1's ``SmolVLAPolicy.forward`` loss (``smolvla_train``): the batch's
  cameras (the checkpoint's keys, images in [0, 1] at the checkpoint's size) resized with
  padding and scaled to [-1, 1], the task tokenized by the checkpoint's tokenizer step, state and
  actions zero-padded to ``max_state_dim`` / ``max_action_dim``; noise and time drawn from
  torch's global generator (the loop saves and restores it, so resume is exact) unless given.
* freeze groups: ``vision`` (the SigLIP tower, ``vlm.model.vision_model``), ``vlm`` (the whole
  VLM: vision, connector, language model), ``expert`` (``lm_expert`` and the state / action /
  time projections). The config flags LeRobot trains with are the defaults, applied at build
  and printed: ``freeze_vision_encoder`` freezes ``vision``, ``train_expert_only`` freezes
  ``vlm`` ("freeze the VLM, train the expert", SmolVLA's default), ``train_state_proj: false``
  freezes ``state_proj``; with ``train_expert_only: false`` the last VLM layer (the last two
  when the expert has half the layers) stays frozen as LeRobot keeps it. Edit those flags in
  the folder's config.json to train more; ``--freeze`` freezes more.
* ``lora_target``: the VLM's attention and MLP projections (``q/k/v/o_proj``,
  ``gate/up/down_proj`` of its decoder layers); LoRA there needs ``train_expert_only: false``
  (peft adapters on a frozen VLM still train, the base weights stay frozen).
* ``insulate`` (``--model.insulate_head=true``, vlastack's gradient-insulation name): the
  expert reads the VLM's keys and values through ``detach()`` (π0.5 knowledge insulation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlastack.pretrained.lerobot import folder as lf
from vlastack.pretrained.lerobot.finetune import Built, register_fine_tunable
from vlastack.pretrained.lerobot.flow import sample_time
from vlastack.pretrained.lerobot.policy import Processors
from vlastack.pretrained.lerobot.smolvla import pad_vector
from vlastack.pretrained.lerobot.smolvla_train import flow_matching_loss, reduce_loss

Batch = dict[str, Any]
VLM = "model.vlm_with_expert.vlm."
VISION = VLM + "model.vision_model."
EXPERT = (
    "model.vlm_with_expert.lm_expert.",
    "model.state_proj.",
    "model.action_in_proj.",
    "model.action_out_proj.",
    "model.action_time_mlp_in.",
    "model.action_time_mlp_out.",
)


def vla_param_groups(
    model: nn.Module, vision: str, vlm: str, expert: str | tuple[str, ...]
) -> dict[str, list[str]]:
    """The freeze groups of a VLM + action-expert policy by parameter-name prefix: ``vision``
    (inside ``vlm`` too), ``vlm`` and ``expert`` (the expert and its projections)."""
    out: dict[str, list[str]] = {"vision": [], "vlm": [], "expert": []}
    for name, _ in model.named_parameters():
        if name.startswith(vision):
            out["vision"].append(name)
        if name.startswith(vlm):
            out["vlm"].append(name)
        elif name.startswith(expert):
            out["expert"].append(name)
    return out


@dataclass(frozen=True)
class VLASpec:
    """What ``finetune.Built.spec`` says of a SmolVLA / pi0 checkpoint."""

    image_keys: tuple[str, ...]
    image_shape: tuple[int, ...] | None
    state_key: str
    state_dim: int
    env_state_key: str | None
    action_key: str
    action_dim: int
    n_action_steps: int
    max_state_dim: int = 0  # > 0: other state / action sizes are zero-padded up to these
    max_action_dim: int = 0


class SmolVLATrainable(nn.Module):
    """LeRobot SmolVLA for training; ``self.model`` is the inference ``SmolVLAModel``."""

    policy_type = "smolvla"
    lora_target = (
        r"model\.vlm_with_expert\.vlm\.model\.text_model\.layers\.\d+\."
        r"(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    )

    def __init__(self, policy: Any, insulate: bool = False) -> None:
        super().__init__()
        self.model = policy.network.model
        self._policy = policy  # tokenizer and image preparation (holds the same network)
        self.spec = policy.spec
        self.insulate = bool(insulate)
        self.last_terms: dict[str, float] = {}

    def _inputs(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor], Any, Any]:
        s, p = self.spec, self._policy
        pre = {k: batch[k] for k in s.cameras}
        pre[s.state_key] = batch[s.state_key]
        images, masks, state = p.prepare(pre)
        tasks = batch.get("task") or [""] * state.shape[0]
        ids, mask = p.tokenize([str(t) for t in tasks])
        return images, masks, state, (ids, mask)

    def loss(
        self,
        batch: Batch,
        noise: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> torch.Tensor:
        s = self.spec
        images, masks, state, (ids, mask) = self._inputs(batch)
        actions = pad_vector(batch[s.action_key].to(torch.float32), s.max_action_dim)
        b = actions.shape[0]
        if noise is None:
            noise = torch.randn(actions.shape, device=actions.device)
        if time is None:
            time = sample_time(b).to(actions.device)
        losses = flow_matching_loss(
            self.model,
            images,
            masks,
            ids,
            mask,
            state,
            actions,
            noise,
            time,
            insulate=self.insulate,
        )
        return reduce_loss(losses, s.action_dim, batch.get("action_is_pad"))

    def sample_actions(self, batch: Batch) -> torch.Tensor:
        """(B, chunk_size, action_dim) normalized, LeRobot's Euler sampler from N(0, 1)."""
        s = self.spec
        images, masks, state, (ids, mask) = self._inputs(batch)
        noise = torch.randn(state.shape[0], s.chunk_size, s.max_action_dim, device=state.device)
        out = self.model.sample_actions(images, masks, ids, mask, state, noise)
        return out[:, :, : s.action_dim]

    def resize_features(self, state_dim: int, action_dim: int) -> None:
        """Train on a robot with other state / action sizes (up to ``max_state_dim`` /
        ``max_action_dim``, which the network zero-pads to): the loss keeps ``action_dim``."""
        import dataclasses

        self.spec = dataclasses.replace(self.spec, state_dim=state_dim, action_dim=action_dim)
        self._policy.spec = self.spec

    def param_groups(self) -> dict[str, list[str]]:
        return vla_param_groups(self, VISION, VLM, EXPERT)


def config_freezes(model: SmolVLATrainable, cfg: Mapping[str, Any]) -> list[str]:
    """Apply LeRobot's SmolVLA training flags (module docstring); the lines to print."""
    groups = model.param_groups()
    params = dict(model.named_parameters())
    said: list[str] = []

    def freeze(names: list[str], why: str) -> None:
        for n in names:
            params[n].requires_grad_(False)
        said.append(f"frozen by config.json {why}: {len(names)} parameter tensors")

    if cfg.get("freeze_vision_encoder", True):
        freeze(groups["vision"], "freeze_vision_encoder=true (group 'vision')")
    if cfg.get("train_expert_only", True):
        freeze(
            groups["vlm"], "train_expert_only=true (group 'vlm': freeze the VLM, train the expert)"
        )
    else:
        n = model.spec.num_vlm_layers
        last = [n - 1]
        experts = model.spec.num_expert_layers
        if experts > 0 and n != experts and n % experts == 0:
            last.append(n - 2)
        prefixes = tuple(f"{VLM}model.text_model.layers.{i}." for i in last)
        freeze(
            [k for k in params if k.startswith(prefixes)],
            f"(LeRobot keeps VLM layers {last} frozen)",
        )
    if not cfg.get("train_state_proj", True):
        freeze([k for k in params if k.startswith("model.state_proj.")], "train_state_proj=false")
    return said


def _spec_of(policy: Any) -> VLASpec:
    s = policy.spec
    cams = s.cameras
    shape = tuple(s.image_shapes[s.image_keys.index(cams[0])])
    return VLASpec(
        cams,
        shape,
        s.state_key,
        s.state_dim,
        None,
        s.action_key,
        s.action_dim,
        s.n_action_steps,
        s.max_state_dim,
        s.max_action_dim,
    )


def _build_smolvla(path: Path, cfg: dict[str, Any], device: Any) -> Built:
    from vlastack.pretrained.lerobot.smolvla_policy import load_lerobot_smolvla

    policy = load_lerobot_smolvla(path, device=device)
    shapes = {
        tuple(policy.spec.image_shapes[policy.spec.image_keys.index(k)])
        for k in policy.spec.cameras
    }
    if len(shapes) > 1:
        from vlastack.errors import ConfigError

        raise ConfigError(
            f"{path / lf.CONFIG}: cameras of different sizes ({sorted(shapes)}); fine-tuning "
            "reads every camera at one size: give the VISUAL input_features one shape"
        )
    model = SmolVLATrainable(policy)
    for line in config_freezes(model, cfg):
        print(line)
    spec = _spec_of(policy)
    chunk = policy.spec.chunk_size
    return Built(model, spec, 1, 0, chunk, squeeze_obs=True, processors=policy.processors)


def _smolvla_policy(
    fj: lf.FolderJSON, procs: Processors, ckpt: Path, device: Any, emb: Any, seed: int
) -> Any:
    """The fine-tuned checkpoint as ``LeRobotSmolVLAPolicy``; the VLM config and tokenizer are
    found beside the folder it was fine-tuned from (``model.init_from``), as at training."""
    from vlastack.pretrained.lerobot.smolvla import SmolVLASpec
    from vlastack.pretrained.lerobot.smolvla_policy import (
        LeRobotSmolVLAPolicy,
        TokenizerStep,
        load_smolvla_network,
    )
    from vlastack.pretrained.lerobot.smolvlm import vlm_config
    from vlastack.pretrained.lerobot.tokenizer import load_tokenizer

    model = json.loads((ckpt / "config.json").read_text()).get("model") or {}
    base = Path(model.get("init_from") or ckpt)
    spec = SmolVLASpec.from_config(fj.config)
    steps = lf.parse_pipeline(fj.preprocessor or {"steps": []}, str(ckpt))
    tok = [s for s in steps if s.name == "tokenizer_processor"]
    tok_step = TokenizerStep.from_config(tok[0].config, str(ckpt / "config.json"))
    vcfg, source = vlm_config(spec.vlm_model_name, base)
    tokenizer = load_tokenizer(tok_step.tokenizer_name, base, what="tokenizer_name")
    net = load_smolvla_network(ckpt / lf.WEIGHTS, spec, vcfg, device)
    return LeRobotSmolVLAPolicy(
        net,
        spec,
        procs,
        tokenizer,
        tok_step,
        newline=any(s.name == "smolvla_new_line_processor" for s in steps),
        checkpoint=str(ckpt),
        seed=seed,
        embodiment=emb,
        folder_json=fj,
        vlm_source=source,
    )


register_fine_tunable("smolvla", _build_smolvla, _smolvla_policy)
