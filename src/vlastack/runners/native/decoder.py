"""The native runner's form of ``CrossDecoder`` (models/layers/decoder.py): ``DecoderPlan``,
the blocks flattened into weight packs and one loop of raw tensor ops (vlastack's native
kernels on a float32 CPU, else oneDNN-prepacked / plain products), and ``NativeDecoder``, the
module the runner puts in a decoder's place so any head built from these blocks runs it.

Written for inference on frozen weights: the packs are copies made when the runner is built,
so a runner must be rebuilt after the weights change (``Policy.use_runner``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlastack import native
from vlastack.models.layers.attention import KV, LayerKVCache
from vlastack.models.layers.block import Block
from vlastack.models.layers.decoder import CrossDecoder
from vlastack.models.layers.mlp import mlp_activation
from vlastack.runners.native.linear import (
    onednn_plan,
    plain_linears,
    plan_linear,
    plan_linear_fns,
    plan_norm,
)


class NativeDecoder(nn.Module):
    """A ``CrossDecoder`` run as its ``DecoderPlan``: same ``context_kv`` / ``forward`` /
    ``new_caches`` calls, same outputs up to float rounding. Holds the original decoder (its
    parameters are shared, not copied) for anything else a head reads from it."""

    def __init__(self, dec: CrossDecoder) -> None:
        super().__init__()
        self.plan = DecoderPlan(dec)
        self.blocks = dec.blocks
        self.context_norm = dec.context_norm
        self.final_norm = dec.final_norm
        self._mask: tuple[Any, Any] = (None, None)  # (context mask, its cross mask or None)

    def context_kv(self, context: torch.Tensor) -> list[KV]:
        return self.plan.context_kv(context)

    def _cross_mask(self, context_mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B, 1, 1, N), or None when every key is valid (same softmax, no mask to build);
        the check runs once per mask tensor (an autoregressive head passes one per chunk)."""
        if context_mask is None:
            return None
        last, cross = self._mask
        if last is context_mask:
            return cross
        cross = None if bool(context_mask.all()) else context_mask[:, None, None, :]
        self._mask = (context_mask, cross)
        return cross

    def forward(
        self,
        x: torch.Tensor,
        kvs: list[KV],
        context_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        caches: list[LayerKVCache] | None = None,
    ) -> torch.Tensor:
        cross_mask = self._cross_mask(context_mask)
        return self.plan.run(x, kvs, cross_mask, self_mask, cond, caches=caches)

    def new_caches(self) -> list[LayerKVCache]:
        return [LayerKVCache() for _ in self.blocks]


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
        onednn = self.onednn = onednn_plan(first.norm1.weight)
        # every pack a NativeLinear: run() takes the native loop (see _run_native)
        self.native = native.usable(first.norm1.weight)
        self.activation = mlp_activation(first.mlp) or "gelu"
        # the FFN's first product with the blocks' activation (GELU or ReLU) fused
        lin, self.ffn_in = plan_linear_fns(onednn, self.activation)

        def pack(w: torch.Tensor, b: torch.Tensor | None) -> tuple:
            return plan_linear(w, b, onednn)

        norm = plan_norm
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
        first = mlp_activation(blocks[0].mlp) if blocks and isinstance(blocks[0], Block) else None
        return (
            first is not None
            and all(
                isinstance(b, Block)
                and b.cross_attn is not None
                and b.norm2 is not None
                and mlp_activation(b.mlp) == first
                and (b.film is None) == (blocks[0].film is None)  # type: ignore[union-attr]
                for b in blocks
            )
            and plain_linears(dec)
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
                -1 if cross_mask.is_inference() else cross_mask._version,
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
