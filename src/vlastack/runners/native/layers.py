"""The native runner's forms of the leaf layers a head may use outside a decoder (π0's action
expert layers, MLPs, projections): each holds its weight packs (``plan_linear``) and runs the
same math as the module it replaces, up to float rounding. Built for frozen weights."""

from __future__ import annotations

import torch
from torch import nn

from vlastack.models.layers.attention import KV, Attention, sdpa
from vlastack.models.layers.mlp import MLP, mlp_activation
from vlastack.runners.native.linear import onednn_plan, plan_linear, plan_linear_fns


class PackedLinear(nn.Module):
    """``nn.Linear`` from a pack; keeps the original's ``weight``/``bias``/sizes readable."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.inner = lin
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.pack = plan_linear(lin.weight, lin.bias, onednn_plan(lin.weight))
        self.lin = plan_linear_fns(onednn_plan(lin.weight))[0]

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.inner.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x, self.pack)


class PackedMLP(nn.Module):
    """``MLP`` with its activation fused into the first product."""

    def __init__(self, mlp: MLP, activation: str) -> None:
        super().__init__()
        fc1, fc2 = mlp[0], mlp[2]
        assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
        onednn = onednn_plan(fc1.weight)
        self.lin, self.lin_act = plan_linear_fns(onednn, activation)
        self.fc1 = plan_linear(fc1.weight, fc1.bias, onednn)
        self.fc2 = plan_linear(fc2.weight, fc2.bias, onednn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.lin_act(x, self.fc1), self.fc2)


class PackedAttention(nn.Module):
    """``Attention`` from packs; ``project_qkv`` is one product (q and kv weights stacked)."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        onednn = onednn_plan(attn.q.weight)
        self.lin = plan_linear_fns(onednn)[0]
        self.q = PackedLinear(attn.q)
        self.kv_pack = plan_linear(attn.kv.weight, attn.kv.bias, onednn)
        self.out_pack = plan_linear(attn.out.weight, attn.out.bias, onednn)
        self.qkv_pack = plan_linear(
            torch.cat([attn.q.weight, attn.kv.weight], 0),
            torch.cat([attn.q.bias, attn.kv.bias], 0),
            onednn,
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, x: torch.Tensor) -> KV:
        k, v = self.lin(x, self.kv_pack).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, KV]:
        B, N, _ = x.shape
        qkv = self.lin(x, self.qkv_pack).view(B, N, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        return qkv[0], (qkv[1], qkv[2])

    def attend(self, q: torch.Tensor, kv: KV, mask: torch.Tensor | None = None) -> torch.Tensor:
        o = sdpa(q, kv[0], kv[1], mask)
        B, _, L, _ = o.shape
        return self.lin(o.transpose(1, 2).reshape(B, L, -1), self.out_pack)

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(self._split(self.q(x)), kv, mask)


def packed_mlp(mlp: MLP) -> nn.Module | None:
    act = mlp_activation(mlp)
    return None if act is None else PackedMLP(mlp, act)
