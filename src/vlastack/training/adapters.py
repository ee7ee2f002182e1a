"""Freeze groups and LoRA adapters, declared by name.

A model may expose ``param_groups()`` naming its parts ('vision', 'language', 'projector',
'head', 'state'); ``--freeze`` accepts those names or regular expressions over parameter names.
LoRA (Hu et al. 2021) is injected with ``peft.inject_adapter_in_model`` into any backbone's
``nn.Linear`` (and plain ``nn.Conv2d``) layers whose module name matches a pattern; only the
wrapped base weights are frozen.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from vlastack.errors import ConfigError, require


def named_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names per model group; parameters outside any group fall in 'other'.

    Accepts ``param_groups()`` returning ``{group: iterable of Parameters | names | Module}``.
    """
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups: dict[str, list[str]] = {}
    m: Any = model
    raw: Any = m.param_groups() if hasattr(m, "param_groups") else {}
    items = raw.items() if isinstance(raw, dict) else raw
    for gname, members in items:
        if isinstance(members, nn.Module):
            members = members.parameters()
        names: list[str] = []
        for m in members if isinstance(members, Iterable) else []:
            if isinstance(m, str):
                names.append(m)
            elif isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str):
                names.append(m[0])
            elif id(m) in by_id:
                names.append(by_id[id(m)])
        groups[str(gname)] = names
    grouped = {n for ns in groups.values() for n in ns}
    other = [n for n in by_id.values() if n not in grouped]
    if other:
        groups.setdefault("other", []).extend(other)
    return groups


def group_lookup(model: nn.Module) -> dict[str, str]:
    return {n: g for g, ns in named_groups(model).items() for n in ns}


def apply_freeze(model: nn.Module, patterns: list[str]) -> list[str]:
    """Freeze parameters in the named groups or matching the regexes; return frozen names."""
    if not patterns:
        return []
    groups = named_groups(model)
    params = dict(model.named_parameters())
    frozen: list[str] = []
    for pat in patterns:
        if pat in groups:
            hits = groups[pat]
        else:
            try:
                rx = re.compile(pat)
            except re.error as exc:
                raise ConfigError(f"freeze pattern {pat!r} is not a valid regex ({exc})") from None
            hits = [n for n in params if rx.search(n)]
        if not hits:
            raise ConfigError(
                f"freeze entry {pat!r} matches no parameter. Groups: {sorted(groups)}; or give "
                f"a regex over names like {next(iter(params), '?')!r}"
            )
        for n in hits:
            params[n].requires_grad_(False)
        frozen.extend(hits)
    return frozen


def apply_lora(
    model: nn.Module, rank: int, alpha: float, target: str, dropout: float = 0.0
) -> list[str]:
    """Inject LoRA into every ``nn.Linear`` whose module name fully matches ``target``, and into
    every ordinary ``nn.Conv2d`` (groups 1: not depthwise) it matches, so a CNN encoder such as
    MobileNetV2 can be LoRA-tuned (peft's Conv2d LoRA: a k×k conv down to ``rank``, 1×1 up).

    peft freezes the whole model on injection; we restore the previous trainable state of every
    parameter that is not a wrapped base weight, so heads and projectors keep training.
    """
    peft = require("peft", "hf", "LoRA adapters")
    # nn.MultiheadAttention reads its out_proj weight directly, so an adapter there would
    # never run: those layers are not candidates
    in_mha = {
        f"{n}.out_proj" if n else "out_proj"
        for n, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
    }
    linear_names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in in_mha
    ]
    rx = re.compile(target)
    conv_names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups == 1 and rx.fullmatch(n)
    ]
    matched = [n for n in linear_names if rx.fullmatch(n)] + conv_names
    if not matched:
        raise ConfigError(
            f"lora.target={target!r} matches no nn.Linear module (nor a groups-1 nn.Conv2d). Linear layers are named like: "
            f"{linear_names[:6]}"
        )
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=matched)
    peft.inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)
            continue
        original = n.replace(".base_layer.", ".")
        if ".base_layer." in n:
            p.requires_grad_(False)
        elif original in before:
            p.requires_grad_(before[original])
    return matched


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy with LoRA weights merged and adapters removed (plain keys, for deployment)."""
    if not any("lora_" in n for n, _ in model.named_parameters()):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            setattr(parent, child, module.get_base_layer())
    return out


def deploy_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in merged_copy(model).state_dict().items()}


def count_parameters(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{group: (total, trainable)} plus 'total'; counts each shared Parameter once."""
    lookup = group_lookup(model)
    out: dict[str, list[int]] = {}
    seen: set[int] = set()
    for n, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        g = lookup.get(n, "other")
        if "lora_" in n:
            g = f"{g}(lora)" if g != "other" else "lora"
        row = out.setdefault(g, [0, 0])
        row[0] += p.numel()
        row[1] += p.numel() if p.requires_grad else 0
    total = [sum(r[0] for r in out.values()), sum(r[1] for r in out.values())]
    res = {g: (r[0], r[1]) for g, r in sorted(out.items())}
    res["total"] = (total[0], total[1])
    return res
