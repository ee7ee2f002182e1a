"""The inference fast path's switches and caches: when the exact-math shortcuts may run
(``fast_inference``; ``reference_inference()`` and ``graph_capture()`` turn them off), and the
per-module caches of values derived from weights (``derived``, ``plan_params``) that the fast
path, the decoder plans and the trunk's encoder plan are built on."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

# ---- inference fast path ------------------------------------------------------------------------
# At batch 1 on a CPU a head's chunk costs a few ms, a good part of it per-op overhead: the fast
# path runs the same math with fewer ops (fused weight packs cached per weight version, no attention
# mask when every token is valid, constants of a chunk computed once). It is taken only without
# autograd and outside tracing/ONNX export (where data-dependent shortcuts would be baked into the
# graph); ``reference_inference()`` turns it off so tests can compare both paths.
_FAST_INFERENCE = True


@contextlib.contextmanager
def reference_inference() -> Iterator[None]:
    """Disable the inference fast path inside the block (tests compare both paths)."""
    global _FAST_INFERENCE
    old, _FAST_INFERENCE = _FAST_INFERENCE, False
    try:
        yield
    finally:
        _FAST_INFERENCE = old


_CAPTURING = False


@contextlib.contextmanager
def graph_capture() -> Iterator[None]:
    """Inside: a CUDA graph is being recorded (``graphs.GraphedHead``). Host synchronizations
    (``bool(tensor)``) are illegal then, so the fast path and data-reading checks stand aside."""
    global _CAPTURING
    old, _CAPTURING = _CAPTURING, True
    try:
        yield
    finally:
        _CAPTURING = old


def is_capturing() -> bool:
    return _CAPTURING


def fast_inference(module: nn.Module | None = None) -> bool:
    """True when the exact-math inference shortcuts may run: autograd off, not tracing or
    exporting, and (given ``module``) every linear layer in it a plain ``nn.Linear`` — the
    shortcuts stack raw weights, which would bypass int8 / BitLinear replacements."""
    if not (
        _FAST_INFERENCE
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        # under torch.compile the reference ops are what inductor fuses; the weight-pack cache
        # below keys on storage pointers, which would make dynamo recompile every call
        and not torch.compiler.is_compiling()
        and not _CAPTURING  # the fast path drops all-valid masks after a host check
    ):
        return False
    return module is None or _plain_linears(module)


# Whether a module's linear layers are all plain ``nn.Linear`` is asked on every chunk; walking
# the module tree each time cost ~0.3 ms per ACT chunk. The answer is cached per module with the
# ``_Structure`` it was read from, and read again only once that structure has changed (a
# submodule assigned, replaced or deleted: ``setattr``, ``add_module``, how int8/BitLinear swaps
# replace layers). No global torch hook: the cache checks its own key on use.
class _Structure:
    """The module structure a cached value was read from: the children, by identity and in
    order, of every module with children in the subtrees it covers and on the way to them from
    the cache's owner. ``unchanged()`` compares them with the modules' dicts now: one C-level
    tuple per such module (an ACT decoder of depth 4 has 18), not a tree walk, so it is cheap
    enough to run on every call. A module replaced, added or deleted under any of them changes
    it; a child added to a module that had none (a leaf: a linear layer, a norm) does not, nor
    does a parameter: plans read their parameters fresh on each call (``plan_params``), and a
    leaf's forward does not run children it did not have."""

    __slots__ = ("_children", "_module_dicts")

    def __init__(self, owner: nn.Module, roots: Sequence[nn.Module]) -> None:
        mods: dict[int, nn.Module] = {}
        for root in roots:
            for m in root.modules():
                mods.setdefault(id(m), m)
        if any(root is not owner for root in roots):  # the path from owner to each root
            parent: dict[int, nn.Module] = {}
            for m in owner.modules():
                for c in m._modules.values():
                    if c is not None:
                        parent.setdefault(id(c), m)
            for root in roots:
                up = parent.get(id(root))
                while up is not None and id(up) not in mods:
                    mods[id(up)] = up
                    up = parent.get(id(up))
        self._module_dicts = [m._modules for m in mods.values() if m._modules]
        self._children = list(map(tuple, map(dict.values, self._module_dicts)))

    def unchanged(self) -> bool:
        return list(map(tuple, map(dict.values, self._module_dicts))) == self._children


def _plain_linears(module: nn.Module) -> bool:
    cache = _cache_of(module)
    hit = cache.get("plain_linears")
    if hit is not None and hit[0].unchanged():
        return bool(hit[1])
    ok = all(type(m) is nn.Linear for m in module.modules() if hasattr(m, "in_features"))
    cache["plain_linears"] = (_Structure(module, [module]), ok)
    return ok


def derived(
    owner: nn.Module, name: str, params: Sequence[torch.Tensor], make: Callable[[], Any]
) -> Any:
    """``make()`` cached on ``owner`` until any of ``params`` changes (storage or in-place version:
    optimizer steps, ``load_state_dict`` and ``.to`` all invalidate it). Inference only: the value
    is built without autograd."""
    key = _params_key(params)
    cache = _cache_of(owner)
    hit = cache.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        value = make()
    cache[name] = (key, value)
    return value


class _Cache(dict):
    """Per-module inference cache. Copies and pickles of the module start empty: the values are
    rebuilt on demand, and oneDNN-packed weights are opaque tensors that cannot be copied."""

    def __deepcopy__(self, memo: dict) -> _Cache:
        return _Cache()

    def __reduce__(self) -> tuple[type, tuple]:
        return (_Cache, ())


def _cache_of(owner: nn.Module) -> _Cache:
    cache = owner.__dict__.get("_inference_cache")
    if cache is None:
        cache = owner.__dict__["_inference_cache"] = _Cache()
    return cache


def _params_key(params: Sequence[torch.Tensor]) -> tuple:
    """What ``derived`` compares: every tensor's storage and in-place version, and the first
    one's device and dtype (``.to()`` moves all of a module's tensors, and gives each new
    storage). ~4x cheaper than asking each tensor for its device and dtype, which matters for
    the decoder plans' ~90 tensors checked on every call."""
    if not params:
        return ()
    try:
        state = [(p.data_ptr(), p._version) for p in params]
    except RuntimeError:  # inference tensors: no version counter
        state = [(p.data_ptr(), _version(p)) for p in params]
    return (params[0].device, params[0].dtype, state)


def _version(t: torch.Tensor) -> int:
    """In-place version counter; inference tensors (made under ``inference_mode``, e.g. a model
    cast to bf16 there) have none and can only change inside ``inference_mode``, where callers
    do not update weights: -1 keys them by storage alone."""
    return -1 if t.is_inference() else t._version


def plan_params(
    owner: nn.Module,
    name: str,
    parts: Callable[[], Sequence[nn.Module | tuple[nn.Module, str]]],
    supported: Callable[[], bool] = lambda: True,
) -> list[torch.Tensor] | None:
    """The current tensors behind an inference plan of ``owner``: every parameter of the modules
    ``parts()`` names (or single ``(module, parameter name)`` pairs), read fresh from the modules'
    parameter dicts on each call so a swapped-in parameter is seen. The module walk, and
    ``supported()``, are cached until the module structure under ``parts()`` changes (see
    ``_Structure``; walking ~90 parameters costs ~0.2 ms, more than a GEMM). None when
    ``supported()`` is False."""
    cache = _cache_of(owner)
    hit = cache.get(name)
    if hit is None or not hit[0].unchanged():
        slots: list[tuple[dict, str]] = []
        roots: list[nn.Module] = []
        for part in parts():
            if isinstance(part, tuple):
                slots.append((part[0]._parameters, part[1]))
                roots.append(part[0])
            else:
                slots.extend((m._parameters, n) for m in part.modules() for n in m._parameters)
                roots.append(part)
        hit = (_Structure(owner, roots), slots, supported())
        cache[name] = hit
    if not hit[2]:
        return None
    return [t for t in (d[n] for d, n in hit[1]) if t is not None]
