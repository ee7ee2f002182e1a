"""Inference switches the plain modules read: whether a CUDA graph is being captured
(``graph_capture``: data-reading input checks stand aside), and the one exact-math shortcut
left inside modules, the vision encoders' Conv→BatchNorm folding (``fast_inference``, turned
off by ``reference_inference()``; its folded weights are cached with ``derived``).

Every other inference speed-up lives in a runner (``vlastack.runners``), not here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

# The Conv→BatchNorm folding runs only without autograd and outside tracing/ONNX export;
# ``reference_inference()`` turns it off so tests can compare both paths.
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
    """Inside: a CUDA graph is being recorded (``runners.cuda_graphs``). Host synchronizations
    (``bool(tensor)``) are illegal then, so data-reading checks stand aside."""
    global _CAPTURING
    old, _CAPTURING = _CAPTURING, True
    try:
        yield
    finally:
        _CAPTURING = old


def is_capturing() -> bool:
    return _CAPTURING


def fast_inference() -> bool:
    """True when the exact-math inference shortcuts that remain inside modules (the vision
    encoders' Conv→BatchNorm folding, ``vision.fusion``) may run: autograd off, not tracing,
    exporting, compiling or capturing a CUDA graph."""
    return (
        _FAST_INFERENCE
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        # under torch.compile the plain ops are what inductor fuses; the folded-weight cache
        # keys on storage pointers, which would make dynamo recompile every call
        and not torch.compiler.is_compiling()
        and not _CAPTURING
    )


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
