"""Rewriting a module tree by rules without touching the original: the walk both the native
head/trunk blocks (``swap_blocks``) and the vision folding (``vision.fold_encoder``) use."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

Rule = Callable[[nn.Module], "nn.Module | None"]


def shallow_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its own child table (parameters and buffers shared)."""
    c = copy.copy(module)
    c.__dict__["_modules"] = dict(module._modules)
    return c


def rewrite(module: nn.Module, rule_of: Callable[[nn.Module], Rule | None]) -> nn.Module:
    """``module`` with every submodule whose rule (``rule_of``) gives a replacement replaced:
    the module itself where nothing under it changes, else a shallow copy (the original is
    untouched)."""
    rule = rule_of(module)
    if rule is not None:
        fast = rule(module)
        if fast is not None:
            return fast
    changed: dict[str, nn.Module] = {}
    for name, child in module._modules.items():
        if child is not None:
            new = rewrite(child, rule_of)
            if new is not child:
                changed[name] = new
    if not changed:
        return module
    out = shallow_copy(module)
    out._modules.update(changed)
    return out
