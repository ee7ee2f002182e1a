"""Shared transformer pieces for the action heads: attention with precomputed keys/values,
pre-norm blocks with optional cross-attention and FiLM, learned-query decoders, and masking helpers.

Written here (instead of ``nn.TransformerDecoder``) because the heads need keys/values of the
context computed once per chunk and reused across denoising steps / decoding steps (π0's prefix
KV cache idea), and per-token KV caches for greedy autoregressive decoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.errors import ConfigError
from vlastack.models.common import cpu_bf16_kernels
from vlastack.native import NativeLinear

KV = tuple[torch.Tensor, torch.Tensor]  # (B, heads, N, head_dim) each


class LayerKVCache:
    """One layer's self-attention K/V of the tokens decoded so far (greedy autoregressive
    decoding), in buffers that grow by doubling: appending copies only the new tokens. (A
    ``torch.cat`` of the whole past per token was 39 ms, 7%, of a 112-token chunk.)"""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.n = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> KV:
        """Add (B, heads, T, hd) keys/values; returns every position's so far (views)."""
        n0, n1 = self.n, self.n + k.shape[2]
        if self.k is None or self.v is None or n1 > self.k.shape[2]:
            cap = max(n1, 16, 0 if self.k is None else 2 * self.k.shape[2])
            B, H, _, hd = k.shape
            nk, nv = k.new_empty(B, H, cap, hd), v.new_empty(B, H, cap, hd)
            if self.k is not None and self.v is not None and n0:
                nk[:, :, :n0] = self.k[:, :, :n0]
                nv[:, :, :n0] = self.v[:, :, :n0]
            self.k, self.v = nk, nv
        self.k[:, :, n0:n1] = k
        self.v[:, :, n0:n1] = v
        self.n = n1
        return self.k[:, :, :n1], self.v[:, :, :n1]


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
# the module tree each time cost ~0.3 ms per ACT chunk. The answer is cached per module and keyed
# on a counter that torch's global module-registration hook bumps whenever any submodule is
# assigned anywhere (``setattr``, ``add_module``: how int8/BitLinear swaps replace layers).
_STRUCTURE_GENERATION = 0


def _on_module_registration(parent: nn.Module, name: str, sub: nn.Module | None) -> None:
    global _STRUCTURE_GENERATION
    _STRUCTURE_GENERATION += 1


torch.nn.modules.module.register_module_module_registration_hook(_on_module_registration)
# a parameter assigned anew (``module.weight = nn.Parameter(...)``, ``load_state_dict(assign=True)``)
torch.nn.modules.module.register_module_parameter_registration_hook(_on_module_registration)


def _plain_linears(module: nn.Module) -> bool:
    cache = _cache_of(module)
    hit = cache.get("plain_linears")
    if hit is not None and hit[0] == _STRUCTURE_GENERATION:
        return bool(hit[1])
    ok = all(type(m) is nn.Linear for m in module.modules() if hasattr(m, "in_features"))
    cache["plain_linears"] = (_STRUCTURE_GENERATION, ok)
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


def _mkldnn_linear_ops() -> bool:
    """oneDNN's prepacked linear (what inductor's CPU freezing pass emits) is in this build."""
    global _MKLDNN_LINEAR
    if _MKLDNN_LINEAR is None:
        ops = torch.ops.mkldnn
        _MKLDNN_LINEAR = bool(
            torch.backends.mkldnn.is_available()
            and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")
        )
    return _MKLDNN_LINEAR


_MKLDNN_LINEAR: bool | None = None


def _onednn_dtype(dtype: torch.dtype) -> bool:
    """oneDNN's prepacked linear runs this dtype on this CPU: float32 always; bfloat16 only where
    the CPU has bf16 kernels, else its reorder raises (seen on an AVX2-only EPYC)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_bf16_kernels())


# oneDNN's prepacked call has ~15-40 µs of fixed overhead (it sets up a primitive descriptor on
# every call); MKL's plain sgemm has ~5 µs but re-packs the weight each time. So a layer goes to
# oneDNN only if its weight is large enough for the pack to pay. Measured at batch-1 shapes on
# one core, 16 rows unless noted, µs oneDNN / MKL:
# - AVX-512 EPYC: 7 outputs × K 256: 28 / 9; 64 × 320: 33 / 15; 128 × 256: 39 / 25; 128 × 1280
#   (8 rows): 63 / 62; 256 × 640 (4 rows): 46 / 46; 256 × 1280 (4 rows): 63 / 93; 256 × 256:
#   ~equal hot and oneDNN ~10 µs ahead with the weights out of cache (ACT's decoder streaming).
# - AVX2-only EPYC (16 weights cycling): 256 × 7: 42 / 10; 256 × 128: 58 / 33; 256 × 256:
#   101 / 72; 256 × 512: 120 / 117; 384 × 384: 129 / 129; 512 × 256: 140 / 165; 768 × 256:
#   178 / 227; 1024 × 256: 237 / 317.
# Hence the cut, in weight elements: 256² and up with AVX-512, 512 × 256 and up without.
def _onednn_min_weight() -> int:
    global _ONEDNN_MIN_WEIGHT
    if _ONEDNN_MIN_WEIGHT is None:
        avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        _ONEDNN_MIN_WEIGHT = 65_536 if avx512 else 131_072
    return _ONEDNN_MIN_WEIGHT


_ONEDNN_MIN_WEIGHT: int | None = None


def _onednn_shape(out_features: int, in_features: int) -> bool:
    return out_features * in_features >= _onednn_min_weight()


def _onednn_pays(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and weight.dtype == x.dtype
        and _onednn_dtype(x.dtype)
        and _onednn_shape(weight.shape[0], weight.shape[-1])
        and _mkldnn_linear_ops()
    )


# the activations fused into a product's epilogue: oneDNN's post-op (name, algorithm), and the
# plain op that follows F.linear where oneDNN is not used
_POST_OPS = {"gelu": ("gelu", "none"), "relu": ("relu", "")}
_ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu}


def packed_linear(
    owner: nn.Module,
    name: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then ``activation`` ("gelu", exact, or "relu") if given,
    with the weight reordered once into oneDNN's blocked layout and cached on ``owner`` until it
    changes. Inference only. At a chunk's small row counts (16 queries) MKL's sgemm re-packs the
    weight on every call; the prepacked kernel skips that and fuses the activation into the GEMM
    epilogue (~15-25% faster per GEMM here, same math up to float rounding). Falls back to the
    plain ops off-CPU or without oneDNN. On a float32 CPU with vlastack's native kernels
    (``vlastack.native``) the product runs there instead, from a pack cached the same way."""
    if x.dtype is torch.float32 and weight.dtype is torch.float32 and native.usable(weight):
        params = (weight,) if bias is None else (weight, bias)
        pack = derived(owner, name + "_native", params, lambda: native.pack_linear(weight, bias))
        return native.linear(x, pack, activation)
    if (
        _onednn_pays(x, weight)
        and (bias is None or bias.dtype == x.dtype)
        and (activation == "gelu" or x.numel() != x.shape[-1])  # one row: see plan_linear_fns
    ):
        rows = max(1, x.numel() // max(1, x.shape[-1]))
        packed = derived(
            owner,
            name,
            (weight,),
            lambda: torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows),
        )
        op, algorithm = _POST_OPS[activation] if activation else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, op, (), algorithm)
    y = F.linear(x, weight, bias)
    return _ACT_FNS[activation](y) if activation else y


def fast_linear(lin: nn.Module, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """``lin(x)`` (then ``activation``) through ``packed_linear`` when ``lin`` is a plain
    ``nn.Linear``; int8 / BitLinear replacements run their own forward."""
    if type(lin) is nn.Linear:
        return packed_linear(lin, "_packed", x, lin.weight, lin.bias, activation)
    y = lin(x)
    return _ACT_FNS[activation](y) if activation else y


def linear(lin: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``lin(x)``, through the prepacked kernel when the fast path is on."""
    return fast_linear(lin, x) if fast_inference() else lin(x)


def none_if_all_valid(mask: torch.Tensor) -> torch.Tensor | None:
    """On the fast path an all-True key mask is dropped: attention over every key is the same
    softmax, and SDPA without a mask skips building the additive −inf mask."""
    return None if fast_inference() and bool(mask.all()) else mask


def sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, except bf16 under autograd on a CPU, which runs in
    float32: PyTorch's CPU flash-attention backward is 2.6-5.4x slower in bf16 than in float32
    at these heads' sizes (ACT's 8x4x20x16: 2.33 vs 0.43 ms; BENCHMARKS.md), and float32 is the
    more precise of the two."""
    if (
        q.dtype == torch.bfloat16
        and q.device.type == "cpu"
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        with torch.autocast("cpu", enabled=False):
            o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
        return o.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention whose keys/values may be projected once and reused."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) → (B, heads, N, hd)
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> KV:
        k, v = linear(self.kv, x).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """Self-attention q and (k, v) of ``x`` in one GEMM (q/kv weights stacked and cached):
        the same products as ``q(x)`` and ``project_kv(x)``, one op instead of two."""
        params = (self.q.weight, self.q.bias, self.kv.weight, self.kv.bias)
        w, b = derived(
            self,
            "_qkv_pack",
            params,
            lambda: (torch.cat(params[0::2], 0), torch.cat(params[1::2], 0)),
        )
        B, N, _ = x.shape
        qkv = packed_linear(self, "_qkv_packed", x, w, b)
        qkv = qkv.view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], (qkv[1], qkv[2])

    def attend(self, q: torch.Tensor, kv: KV, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Split queries q (B, heads, L, hd) → output projection (B, L, D)."""
        o = sdpa(q, kv[0], kv[1], mask)
        B, _, L, _ = o.shape
        o = o.transpose(1, 2).reshape(B, L, -1)
        return linear(self.out, o)

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D) queries; kv from ``project_kv``; mask broadcastable to (B, 1, L, N), True=attend."""
        q = linear(self.q, x)
        return self.attend(self._split(q), kv, mask)


ACTIVATIONS = tuple(_ACT_FNS)  # the names a block's MLP takes


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation: unknown value {activation!r}; expected one of {list(ACTIVATIONS)}"
        )
    return activation


class MLP(nn.Sequential):
    """Linear → GELU (exact, the default) or ReLU (ACT/DETR's choice) → Linear."""

    def __init__(
        self, dim: int, hidden: int, out: int | None = None, activation: str = "gelu"
    ) -> None:
        act = nn.ReLU() if check_activation(activation) == "relu" else nn.GELU()
        super().__init__(nn.Linear(dim, hidden), act, nn.Linear(hidden, out or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, act, fc2 = self[0], self[1], self[2]
        if fast_inference():
            fused = _mlp_activation(self)
            if fused is not None:
                return fast_linear(fc2, fast_linear(fc1, x, fused))
        return fc2(act(fc1(x)))


class Block(nn.Module):
    """Pre-norm block: self-attention → optional cross-attention → MLP.

    With ``cond_dim`` each sub-layer's LayerNorm output is FiLM-modulated, x·(1+γ)+β, with γ, β
    from the conditioning vector (Perez et al. 1709.07871; DiT-style adaLN).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        cross: bool = False,
        cond_dim: int = 0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads)
        self.cross_attn = Attention(dim, num_heads) if cross else None
        self.norm2 = nn.LayerNorm(dim) if cross else None
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation=activation)
        n_mod = 3 if cross else 2
        self.film = nn.Linear(cond_dim, 2 * n_mod * dim) if cond_dim else None

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        cross_kv: KV | None = None,
        cross_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        cache: LayerKVCache | None = None,
    ) -> torch.Tensor:
        """``cache`` holds this layer's past self-attention K/V for incremental causal decoding:
        new K/V are appended and every new query sees all cached positions."""
        mods: list[torch.Tensor] = []
        if self.film is not None and cond is not None:
            mods = list(
                self.film(cond).unsqueeze(1).chunk(self.film.out_features // x.shape[-1], -1)
            )

        def mod(h: torch.Tensor, i: int) -> torch.Tensor:
            return h * (1 + mods[2 * i]) + mods[2 * i + 1] if mods else h

        h = mod(self.norm1(x), 0)
        if cache is None and fast_inference(self.self_attn):
            q, kv = self.self_attn.project_qkv(h)
            x = x + self.self_attn.attend(q, kv, self_mask)
            return self._after_self_attn(x, cross_kv, cross_mask, mod)
        kv = self.self_attn.project_kv(h)
        if cache is not None:
            kv = cache.append(*kv)
        x = x + self.self_attn(h, kv, self_mask)
        return self._after_self_attn(x, cross_kv, cross_mask, mod)

    def _after_self_attn(
        self,
        x: torch.Tensor,
        cross_kv: KV | None,
        cross_mask: torch.Tensor | None,
        mod: Callable[[torch.Tensor, int], torch.Tensor],
        cross_q: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-attention (if any) and MLP; ``cross_q`` (B, heads, L, hd): precomputed queries."""
        i = 1
        if self.cross_attn is not None and self.norm2 is not None:
            assert cross_kv is not None, "cross-attention block needs cross_kv"
            if cross_q is None:
                x = x + self.cross_attn(mod(self.norm2(x), i), cross_kv, cross_mask)
            else:
                x = x + self.cross_attn.attend(cross_q, cross_kv, cross_mask)
            i += 1
        return x + self.mlp(mod(self.norm3(x), i))


class CrossDecoder(nn.Module):
    """A stack of ``Block``s that cross-attend to a context whose K/V are computed once."""

    def __init__(
        self,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        cond_dim: int = 0,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.context_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            Block(width, num_heads, mlp_ratio, cross=True, cond_dim=cond_dim, activation=activation)
            for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(width)

    def context_kv(self, context: torch.Tensor) -> list[KV]:
        """Per-layer cross-attention K/V of the (already width-projected) context."""
        if fast_inference(self):
            plan = self.plan()
            if plan is not None:
                return plan.context_kv(context)
            return self._context_kv_fused(self.context_norm(context))
        c = self.context_norm(context)
        out: list[KV] = []
        for b in self.blocks:
            assert isinstance(b, Block) and b.cross_attn is not None
            out.append(b.cross_attn.project_kv(c))
        return out

    def _context_kv_fused(self, c: torch.Tensor) -> list[KV]:
        """All layers' K/V in one GEMM with the per-layer weights stacked (cached), (B, N, L·2D)."""
        attns: list[Attention] = []
        for blk in self.blocks:
            assert isinstance(blk, Block) and blk.cross_attn is not None
            attns.append(blk.cross_attn)
        params = [t for a in attns for t in (a.kv.weight, a.kv.bias)]
        w, b = derived(
            self,
            "_kv_pack",
            params,
            lambda: (torch.cat(params[0::2], 0), torch.cat(params[1::2], 0)),
        )
        kv = packed_linear(self, "_kv_packed", c, w, b)
        return _per_layer_kv(kv, len(attns), attns[0].num_heads, attns[0].head_dim)

    def forward(
        self,
        x: torch.Tensor,
        kvs: list[KV],
        context_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        caches: list[LayerKVCache] | None = None,
    ) -> torch.Tensor:
        """``context_mask`` (B, N) True = valid, or None when every context token is valid;
        ``caches`` (from ``new_caches``): incremental decoding, ``x`` the new tokens only."""
        cross_mask = context_mask[:, None, None, :] if context_mask is not None else None
        if fast_inference(self):
            plan = self.plan()
            if plan is not None:
                return plan.run(x, kvs, cross_mask, self_mask, cond, caches=caches)
        for i, blk in enumerate(self.blocks):
            x = blk(
                x, self_mask, kvs[i], cross_mask, cond, caches[i] if caches is not None else None
            )
        return self.final_norm(x)

    def new_caches(self) -> list[LayerKVCache]:
        """Empty per-layer self-attention caches for greedy decoding with ``forward``."""
        return [LayerKVCache() for _ in self.blocks]

    def plan(self) -> DecoderPlan | None:
        """The blocks as a flat ``DecoderPlan`` for the inference fast path, rebuilt when any
        of their tensors changes; None when a block holds something the plan does not run (an
        activation other than exact GELU or ReLU, blocks that mix them, a replaced linear layer)."""
        params = plan_params(self, "plan", lambda: [self], lambda: DecoderPlan.supports(self))
        if params is None:
            return None
        return derived(self, "_plan", params, lambda: DecoderPlan(self))


def plan_params(
    owner: nn.Module,
    name: str,
    parts: Callable[[], Sequence[nn.Module | tuple[nn.Module, str]]],
    supported: Callable[[], bool] = lambda: True,
) -> list[torch.Tensor] | None:
    """The current tensors behind an inference plan of ``owner``: every parameter of the modules
    ``parts()`` names (or single ``(module, parameter name)`` pairs), read fresh from the modules'
    parameter dicts on each call so a swapped-in parameter is seen. The module walk, and
    ``supported()``, are cached until the module structure changes (walking ~90 parameters costs
    ~0.2 ms, more than a GEMM). None when ``supported()`` is False."""
    cache = _cache_of(owner)
    hit = cache.get(name)
    if hit is None or hit[0] != _STRUCTURE_GENERATION:
        slots: list[tuple[dict, str]] = []
        for part in parts():
            if isinstance(part, tuple):
                slots.append((part[0]._parameters, part[1]))
            else:
                slots.extend((m._parameters, n) for m in part.modules() for n in m._parameters)
        hit = (_STRUCTURE_GENERATION, slots, supported())
        cache[name] = hit
    if not hit[2]:
        return None
    return [t for t in (d[n] for d, n in hit[1]) if t is not None]


def _onednn_plan(t: torch.Tensor) -> bool:
    """Plans built from weights like ``t`` use oneDNN's prepacked linear."""
    return t.device.type == "cpu" and _onednn_dtype(t.dtype) and _mkldnn_linear_ops()


def plan_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, onednn: bool, rows: int = 16
) -> tuple:
    """A linear layer's weight as a plan holds it: (weight, bias), or (oneDNN-prepacked weight,
    bias, weight) where the pack pays (see ``_onednn_shape``; the plain weight serves one-row
    calls); run it with the plan's ``lin``. A float32 CPU weight becomes a ``NativeLinear``
    where vlastack's native kernels are built (``vlastack.native``), whatever ``onednn`` says."""
    weight, bias = weight.detach(), None if bias is None else bias.detach()
    if native.usable(weight):
        return native.pack_linear(weight, bias)
    if onednn and _onednn_shape(weight.shape[0], weight.shape[-1]):
        w = weight.contiguous()
        return (torch.ops.mkldnn._reorder_linear_weight(w, rows), bias, w)
    return (weight, bias)


def plan_linear_fns(onednn: bool, activation: str = "gelu") -> tuple[Callable, Callable]:
    """``lin(x, pack)`` and ``lin_act(x, pack)`` (then ``activation``: "gelu", exact, or
    "relu", fused into oneDNN's product where the layer has a pack) for packs made by
    ``plan_linear``."""
    act = _ACT_FNS[activation]
    nl = native.linear

    def lin(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb)
        return F.linear(x, wb[0], wb[1])

    def lin_act(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb, activation)
        return act(F.linear(x, wb[0], wb[1]))

    if not onednn:
        return lin, lin_act
    lp = torch.ops.mkldnn._linear_pointwise.default  # the overload: no per-call lookup
    op, algorithm = _POST_OPS[activation]

    # One row (a decoding step) is a GEMV: streaming the weight is the cost, oneDNN's pack buys
    # nothing and its fixed overhead shows, so MKL runs it from the plain weight. 16 weights
    # cycling, one row, µs MKL / oneDNN on an AVX2 EPYC: 256 × 256 28 / 47, 256 × 1024 80 /
    # 117, 1024 × 256 118 / 108 (BENCHMARKS.md). Not with the activation: oneDNN fuses it, and
    # torch's exact GELU alone costs ~20 µs on 1,024 values on that CPU.
    def lin_packed(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb)
        if wb[0].layout is torch.strided:  # a small layer left to MKL
            return F.linear(x, wb[0], wb[1])
        if x.numel() == x.shape[-1]:
            return F.linear(x, wb[2], wb[1])
        return lp(x, wb[0], wb[1], "none", (), "")

    def lin_act_packed(x: torch.Tensor, wb: tuple) -> torch.Tensor:
        if type(wb) is NativeLinear:
            return nl(x, wb, activation)
        if wb[0].layout is torch.strided:
            return act(F.linear(x, wb[0], wb[1]))
        return lp(x, wb[0], wb[1], op, (), algorithm)

    return lin_packed, lin_act_packed


def _mlp_activation(mlp: nn.Module) -> str | None:
    """The activation of a block's MLP a plan can run: "gelu" (exact) or "relu", else None."""
    if not isinstance(mlp, nn.Sequential) or len(mlp) != 3:
        return None
    act = mlp[1]
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    if type(act) is nn.ReLU:
        return "relu"
    return None


def _plan_norm(n: nn.LayerNorm) -> tuple:
    return (
        None if n.weight is None else n.weight.detach(),
        None if n.bias is None else n.bias.detach(),
        n.eps,
    )


class DecoderPlan:
    """A ``CrossDecoder``'s blocks flattened for inference: per block its LayerNorm parameters
    and weight packs (q/k/v stacked, oneDNN-prepacked on a CPU), all blocks' context K/V and
    FiLM weights stacked into one product each, run by one loop of raw tensor ops.

    Same math as the modules, up to float rounding. What it removes is Python: module calls,
    per-GEMM cache lookups, attribute reads and fast-path checks were ~1,500 Python calls and
    ~1 ms of a 3.3 ms ACT chunk on one CPU core (the GEMMs themselves ~2.3 ms); see
    BENCHMARKS.md. Written by hand because no library offers it for eager mode: torch.compile
    does this to a graph, but compiles for minutes, recompiles on new shapes and is slower than
    this path on these heads (BENCHMARKS.md), and TorchScript is deprecated.
    """

    def __init__(self, dec: CrossDecoder) -> None:
        blocks = [b for b in dec.blocks if isinstance(b, Block)]
        first = blocks[0]
        assert first.cross_attn is not None
        self.width = first.norm1.normalized_shape[0]
        self.heads, self.head_dim = first.self_attn.num_heads, first.self_attn.head_dim
        self.depth = len(blocks)
        onednn = self.onednn = _onednn_plan(first.norm1.weight)
        # every pack a NativeLinear: run() takes the native loop (see _run_native)
        self.native = native.usable(first.norm1.weight)
        self.activation = _mlp_activation(first.mlp) or "gelu"
        # the FFN's first product with the blocks' activation (GELU or ReLU) fused
        lin, self.ffn_in = plan_linear_fns(onednn, self.activation)

        def pack(w: torch.Tensor, b: torch.Tensor | None) -> tuple:
            return plan_linear(w, b, onednn)

        norm = _plan_norm
        self.lin = lin
        self.context_norm = norm(dec.context_norm)
        cross = [b.cross_attn for b in blocks if b.cross_attn is not None]
        self.context_kv_pack = plan_linear(
            torch.cat([a.kv.weight for a in cross], 0),
            torch.cat([a.kv.bias for a in cross], 0),
            onednn,
            rows=4,
        )
        self.blocks: list[tuple] = []
        for b in blocks:
            sa, ca = b.self_attn, b.cross_attn
            assert ca is not None and b.norm2 is not None
            qkv_w = torch.cat([sa.q.weight, sa.kv.weight], 0)
            qkv_b = torch.cat([sa.q.bias, sa.kv.bias], 0)
            fc1, fc2 = b.mlp[0], b.mlp[2]
            assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
            self.blocks.append(
                (
                    norm(b.norm1),
                    pack(qkv_w, qkv_b),
                    pack(sa.out.weight, sa.out.bias),
                    norm(b.norm2),
                    pack(ca.q.weight, ca.q.bias),
                    pack(ca.out.weight, ca.out.bias),
                    norm(b.norm3),
                    pack(fc1.weight, fc1.bias),
                    pack(fc2.weight, fc2.bias),
                )
            )
        self.final_norm = norm(dec.final_norm)
        # FiLM: every block's γ/β from one product; the γ biases carry the +1 of x·(1+γ)+β so
        # each modulation is one addcmul
        self.film = None
        if first.film is not None:
            ws, bs = [], []
            for b in blocks:
                assert b.film is not None
                bias = b.film.bias.detach().clone()
                D = self.width
                for i in range(0, b.film.out_features // D, 2):
                    bias[i * D : (i + 1) * D] += 1
                ws.append(b.film.weight.detach())
                bs.append(bias)
            self.film = pack(torch.cat(ws, 0), torch.cat(bs, 0))
            assert first.film.out_features == 6 * self.width  # γ, β for 3 sub-layers
        # Short-memory cross-attention (see ``_ShortMemory``): per (layer, head) the query
        # weights scaled by 1/√hd, (L·H, hd, D), and the output weights' head columns
        # transposed, (L·H, hd, D); output biases divided by H (each head's softmax sums to 1).
        H, hd, D = self.heads, self.head_dim, self.width
        scale = hd**-0.5
        self.cross_wq = torch.cat([a.q.weight.detach().view(H, hd, D) * scale for a in cross])
        self.cross_bq = torch.stack([a.q.bias.detach().view(H, hd) * scale for a in cross])
        self.cross_wo = torch.cat(
            [a.out.weight.detach().view(D, H, hd).permute(1, 2, 0) for a in cross]
        ).contiguous()
        self.cross_bo = torch.stack([a.out.bias.detach() / H for a in cross]).view(-1, 1, 1, D)
        # the whole decoder in one native call where no FiLM modulates it (_run_native)
        self.native_params = None
        if self.native and self.film is None:
            fc1 = first.mlp[0]
            assert isinstance(fc1, nn.Linear)
            self.native_params = native.DecoderParams(
                self.blocks, self.final_norm, D, H, fc1.out_features, self.activation
            )

    @staticmethod
    def supports(dec: CrossDecoder) -> bool:
        blocks = list(dec.blocks)
        first = _mlp_activation(blocks[0].mlp) if blocks and isinstance(blocks[0], Block) else None
        return (
            first is not None
            and all(
                isinstance(b, Block)
                and b.cross_attn is not None
                and b.norm2 is not None
                and _mlp_activation(b.mlp) == first
                and (b.film is None) == (blocks[0].film is None)  # type: ignore[union-attr]
                for b in blocks
            )
            and _plain_linears(dec)
        )

    def context_kv(self, context: torch.Tensor) -> list[KV]:
        """``CrossDecoder.context_kv``: every layer's K/V of the context from one product."""
        n = self.context_norm
        if self.native:  # the native loop reads K/V from the stacked product: views on demand
            out = _PlanKV()
            out.stacked = native.ln_linear(context, n, self.context_kv_pack)
            out.lazy = (self.depth, self.heads, self.head_dim)
            return out
        c = torch.layer_norm(context, (context.shape[-1],), n[0], n[1], n[2])
        kv = self.lin(c, self.context_kv_pack)
        out = _PlanKV(_per_layer_kv(kv, self.depth, self.heads, self.head_dim))
        out.stacked = kv
        return out

    def short_memory(
        self, kvs: list[KV], cross_mask: torch.Tensor | None, rows: int, first_pass: bool = True
    ) -> _ShortMemory | None:
        """The re-associated cross-attention operands for ``kvs`` (cached on the list returned
        by ``context_kv``, so a sampler's steps share them); None where the memory is too long
        to pay. A multi-row pass (a chunk's queries) pays from the first pass on when rows ≥ N
        and 4·H·N ≤ width: building Â and VO costs H·N·hd·D per layer, a quarter of the q GEMM
        at ACT's shapes (16 queries, 4 memory tokens, 4 heads), and each pass then runs two
        small products in place of the q and output GEMMs and the attention call. ACT's single
        pass, same-process A/B on the AVX2 EPYC: 0.96-0.98× the chunk time; on the AVX-512
        machine it measured the same either way (2.72 vs 2.69 ms; BENCHMARKS.md). A one-token
        decoding step pays from the second token on, up to B·H·N = width: its two products are
        then no larger than the q and output GEMVs they replace, and the attention call goes
        (bins_ar at batch 1, 64 context tokens: 0.89-0.93× the chunk time; at batch 32 without
        the B factor it made chunks/s 17.6 → 11.8; BENCHMARKS.md). ``first_pass=False``: a multi-row
        pass pays only from the second on too (the native loop, whose q and output products and
        attention cost less than building Â and VO for one pass)."""
        if not isinstance(kvs, _PlanKV):
            return None
        kvs.passes += 1
        N = kvs[0][0].shape[2]
        # a decoding step (one row): per sample, two products the size of the q and output
        # projections replace those two and the attention call; Â and VO are per sample, so a
        # batch streams B of them where the projections stream one weight for all rows
        B = kvs[0][0].shape[0]
        pays = (
            B * self.heads * N <= self.width
            if rows == 1
            else rows >= N and 4 * self.heads * N <= self.width
        )
        if ((rows == 1 or not first_pass) and kvs.passes < 2) or not pays:
            return None
        # the mask is usually a fresh view per pass (context_mask[:, None, None, :]); holding a
        # reference to the cached one keeps its storage from being reused by another mask
        key = (
            None
            if cross_mask is None
            else (
                cross_mask.data_ptr(),
                cross_mask.shape,
                cross_mask.stride(),
                _version(cross_mask),
            )
        )
        hit = kvs.short
        if hit is None or hit[0] != key:
            hit = (key, _ShortMemory(self, kvs, cross_mask), cross_mask)
            kvs.short = hit
        return hit[1]

    def run(
        self,
        x: torch.Tensor,
        kvs: list[KV],
        cross_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        start: int = 0,
        first_q: torch.Tensor | None = None,
        caches: list[LayerKVCache] | None = None,
    ) -> torch.Tensor:
        """``CrossDecoder.forward`` from block ``start`` on; ``first_q`` (B, heads, L, hd): that
        block's cross-attention queries, already computed (its self-attention is then skipped
        and ``x`` is the state after it); ``caches``: incremental decoding, as there."""
        if (
            self.native
            and caches is None
            and self_mask is None
            and getattr(kvs, "stacked", None) is not None
            and x.dtype is torch.float32
            and not x.requires_grad
        ):
            return self._run_native(x, kvs, cross_mask, cond, start, first_q)
        lin, ffn_in, ln, attn = self.lin, self.ffn_in, torch.layer_norm, _sdpa_plain
        addcmul = torch.addcmul
        B, T, D = x.shape
        H, hd = self.heads, self.head_dim
        shape = (D,)
        mods: Any = None
        if self.film is not None and cond is not None:
            mods = lin(cond, self.film).view(B, 1, -1).chunk(self.depth * 6, -1)
        short = self.short_memory(kvs, cross_mask, T)
        baddbmm = torch.baddbmm
        for i in range(start, self.depth):
            n1, qkv, o1, n2, q2, o2, n3, f1, f2 = self.blocks[i]
            m = i * 6
            past_self_attn = i == start and first_q is not None  # x is already past it
            if not past_self_attn:
                h = ln(x, shape, n1[0], n1[1], n1[2])
                if mods is not None:
                    h = addcmul(mods[m + 1], h, mods[m])
                t = lin(h, qkv).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
                k, v = (t[1], t[2]) if caches is None else caches[i].append(t[1], t[2])
                a = attn(t[0], k, v, attn_mask=self_mask)
                x = x + lin(a.transpose(1, 2).reshape(B, T, D), o1)
            if short is None and first_q is not None and past_self_attn:
                q = first_q
            else:
                h = ln(x, shape, n2[0], n2[1], n2[2])
                if mods is not None:
                    h = addcmul(mods[m + 3], h, mods[m + 2])
                if short is None:
                    q = lin(h, q2).view(B, T, H, hd).transpose(1, 2)
            if short is not None:  # scores = h Âᵀ + c; x + P·VO (residual and b_o folded in)
                p = baddbmm(short.bias[i], h, short.keys[i].transpose(1, 2))
                p = p.view(B, T, H, -1).softmax(-1).view(B, T, -1)
                x = baddbmm(x, p, short.values[i])
            else:
                k, v = kvs[i]
                a = attn(q, k, v, attn_mask=cross_mask)
                x = x + lin(a.transpose(1, 2).reshape(B, T, D), o2)
            h = ln(x, shape, n3[0], n3[1], n3[2])
            if mods is not None:
                h = addcmul(mods[m + 5], h, mods[m + 4])
            x = x + lin(ffn_in(h, f1), f2)
        n = self.final_norm
        return ln(x, shape, n[0], n[1], n[2])


    def _run_native(
        self,
        x: torch.Tensor,
        kvs: list[KV],
        cross_mask: torch.Tensor | None,
        cond: torch.Tensor | None,
        start: int,
        first_q: torch.Tensor | None,
    ) -> torch.Tensor:
        """``run`` with vlastack's native kernels (``vlastack.native``): each product carries
        its bias, activation and residual add, and attention reads q, k and v straight from the
        products' outputs (heads side by side) and writes the output projection's input, so
        the views, transposes and copies around SDPA go too. Same math, float32."""
        nl, nln, ln, addcmul = native.linear, native.ln_linear, torch.layer_norm, torch.addcmul
        self_attend, cross_attend = native.self_attention, native.cross_attention
        act = self.activation
        B, T, D = x.shape
        H = self.heads
        shape = (D,)
        mods: Any = None
        if self.film is not None and cond is not None:
            mods = self.lin(cond, self.film).view(B, 1, -1).chunk(self.depth * 6, -1)
        stacked = kvs.stacked  # type: ignore[attr-defined]  # (B, N, L·2·D): K, V per layer
        key_mask = native.key_mask_bytes(cross_mask, B)
        short = self.short_memory(kvs, cross_mask, T, first_pass=False)
        if first_q is not None and first_q.dim() == 4:  # (B, H, T, hd) → heads side by side
            first_q = first_q.transpose(1, 2).reshape(B, T, D)
        if short is None and mods is None and self.native_params is not None:
            if x.stride(-1) != 1 or x.stride(1) != D:
                x = x.contiguous()
            return native.decoder(self.native_params, x, stacked, key_mask, start, first_q)
        q: Any = None
        for i in range(start, self.depth):
            n1, qkv, o1, n2, q2, o2, n3, f1, f2 = self.blocks[i]
            m = i * 6
            past_self_attn = i == start and first_q is not None
            if not past_self_attn:
                if mods is not None:
                    h = addcmul(mods[m + 1], ln(x, shape, n1[0], n1[1], n1[2]), mods[m])
                    t = nl(h, qkv)
                else:
                    t = nln(x, n1, qkv)
                x = nl(self_attend(t, H), o1, None, x)
            if short is None and past_self_attn:
                q = first_q
            elif short is None and mods is None:
                q = nln(x, n2, q2)
            else:
                h = ln(x, shape, n2[0], n2[1], n2[2])
                if mods is not None:
                    h = addcmul(mods[m + 3], h, mods[m + 2])
                if short is None:
                    q = nl(h, q2)
            if short is not None:  # as in run()
                p = torch.baddbmm(short.bias[i], h, short.keys[i].transpose(1, 2))
                p = p.view(B, T, H, -1).softmax(-1).view(B, T, -1)
                x = torch.baddbmm(x, p, short.values[i])
            else:
                x = nl(cross_attend(q, stacked, i, H, key_mask), o2, None, x)
            if mods is not None:
                h = addcmul(mods[m + 5], ln(x, shape, n3[0], n3[1], n3[2]), mods[m + 4])
                x = nl(nl(h, f1, act), f2, None, x)
            else:
                x = nl(nln(x, n3, f1, act), f2, None, x)
        n = self.final_norm
        return ln(x, shape, n[0], n[1], n[2])


_sdpa_plain = F.scaled_dot_product_attention


class _PlanKV(list):
    """``DecoderPlan.context_kv``'s per-layer (K, V) list, which also carries the cached
    ``_ShortMemory`` built from it."""

    short: Any = None
    passes = 0
    stacked: torch.Tensor | None = None  # the one (B, N, L·2·H·hd) product the views are of
    # (layers, heads, hd) while the per-layer views are not made yet: the native loop reads
    # ``stacked`` and never needs them; anything that indexes or iterates makes them then
    lazy: tuple | None = None

    def _views(self) -> None:
        lazy, self.lazy = self.lazy, None
        stacked = self.stacked
        assert lazy is not None and stacked is not None
        list.extend(self, _per_layer_kv(stacked, *lazy))

    def __getitem__(self, i: Any) -> Any:
        if self.lazy is not None:
            self._views()
        return list.__getitem__(self, i)

    def __iter__(self) -> Iterator[Any]:
        if self.lazy is not None:
            self._views()
        return list.__iter__(self)

    def __len__(self) -> int:
        return self.lazy[0] if self.lazy is not None else list.__len__(self)


class _ShortMemory:
    """Cross-attention to a short memory (N keys, H·N ≪ width), re-associated. With h the
    normed queries, per head: softmax((h W_q,hᵀ + b_q,h) K_hᵀ / √hd) V_h W_o,hᵀ + b_o. For each
    layer the chunk computes once Â = K_h W_q,h / √hd and VO = V_h W_o,hᵀ (+ b_o / H), N rows
    per head, after which every decoder pass does two (T × H·N) products, scores = h Âᵀ + c and
    x + P·VO, in place of the T-row q and output GEMMs and the attention. The same sums in
    another order: ACT's decoder (16 queries, a 4-token memory, 4 heads) does a quarter of the
    FLOPs there, with 7 fewer GEMM calls per chunk, and diffusion's denoiser reuses Â and VO
    over its sampling steps. Masked keys get -inf in c, as SDPA's boolean mask does."""

    def __init__(self, plan: DecoderPlan, kvs: list[KV], cross_mask: torch.Tensor | None) -> None:
        L, H, hd, D = plan.depth, plan.heads, plan.head_dim, plan.width
        k0 = kvs[0][0]
        B, N = k0.shape[0], k0.shape[2]
        # (L, B, H, N, hd) → (L·H, B·N, hd): a head's rows for every batch element in one GEMM
        stacked = getattr(kvs, "stacked", None)
        if stacked is not None:  # one copy each, straight from the stacked projection
            kv = stacked.view(B, N, L, 2, H, hd).permute(3, 2, 4, 0, 1, 5)
            k, v = kv[0].reshape(L * H, B * N, hd), kv[1].reshape(L * H, B * N, hd)
        else:
            k = torch.stack([kv[0] for kv in kvs]).transpose(1, 2).reshape(L * H, B * N, hd)
            v = torch.stack([kv[1] for kv in kvs]).transpose(1, 2).reshape(L * H, B * N, hd)

        def per_batch(t: torch.Tensor) -> torch.Tensor:  # (L·H, B·N, D) → (L, B, H·N, D)
            return t.view(L, H, B, N, D).transpose(1, 2).reshape(L, B, H * N, D)

        self.keys = per_batch(torch.bmm(k, plan.cross_wq))
        self.values = per_batch(torch.bmm(v, plan.cross_wo)) + plan.cross_bo
        # c = b_q,h·K_h / √hd: (L, H, B·N) → (L, B, 1, H·N)
        c = (k.view(L, H, B * N, hd) * plan.cross_bq[:, :, None, :]).sum(-1)
        bias = c.view(L, H, B, N).permute(0, 2, 1, 3).reshape(L, B, 1, H * N)
        if cross_mask is not None:  # (B, 1, 1, N) True = attend
            neg = torch.zeros(cross_mask.shape, dtype=bias.dtype, device=bias.device)
            neg = neg.masked_fill(~cross_mask, float("-inf"))
            bias = bias + neg.view(B, 1, N).repeat(1, 1, H)
        self.bias = bias


def _per_layer_kv(kv: torch.Tensor, layers: int, heads: int, head_dim: int) -> list[KV]:
    """Every layer's (K, V) views of one stacked projection (B, N, L·2·heads·hd)."""
    B, N, _ = kv.shape
    # (B, N, L, 2, heads, hd) → (L, 2, B, heads, N, hd)
    kv = kv.view(B, N, layers, 2, heads, head_dim).permute(2, 3, 0, 4, 1, 5)
    return [(kv[i, 0], kv[i, 1]) for i in range(layers)]


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def fill_padded_actions(actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """Replace padded steps by the last valid step before them (zeros if none), (B, H, A).

    Heads whose inputs see the whole chunk (diffusion, flow, FAST, AR bins) would otherwise let the
    padded values leak into the loss of valid steps; repeating the last action is also what the
    data pipeline's edge padding looks like, so the model sees familiar chunks.
    """
    valid = ~action_is_pad
    H = actions.shape[1]
    idx = torch.where(
        valid, torch.arange(H, device=actions.device), torch.zeros_like(valid, dtype=torch.long)
    )
    idx = torch.cummax(idx, dim=1).values
    filled = actions.gather(1, idx[..., None].expand_as(actions))
    any_valid_before = torch.cummax(valid.to(torch.long), dim=1).values.bool()
    return torch.where(any_valid_before[..., None], filled, torch.zeros_like(actions))


def loss_weights(
    action_is_pad: torch.Tensor, action_dim_mask: torch.Tensor | None, action_dim: int
) -> torch.Tensor:
    """(B, H, A) float weights: 1 on valid steps × valid dims."""
    w = (~action_is_pad).to(torch.float32)[..., None].expand(-1, -1, action_dim)
    if action_dim_mask is not None:
        w = w * action_dim_mask.to(torch.float32)[:, None, :]
    return w


def masked_mean(err: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ err·w / max(Σ w, 1) over all but the batch dim → (B,)."""
    dims = tuple(range(1, err.dim()))
    return (err * w).sum(dims) / w.sum(dims).clamp(min=1.0)


def masked_mean_pool(context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    m = context_mask.to(context.dtype)[..., None]
    return (context * m).sum(1) / m.sum(1).clamp(min=1.0)


def config_from(cls: type, cfg: Any) -> Any:
    """Accept a config dataclass instance or a dict; unknown keys are an error naming them."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{cls.__name__}: expected a dict or {cls.__name__}, got {type(cfg).__name__}"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(cfg) - names - {"name", "type"})
    if extra:
        raise ConfigError(
            f"{cls.__name__}: unknown field(s) {extra}; known fields: {sorted(names)}"
        )
    return cls(**{k: v for k, v in cfg.items() if k in names})
