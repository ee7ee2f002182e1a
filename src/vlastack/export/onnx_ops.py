"""Exporter fixes applied while ``export.onnx.export_graph`` traces a graph: symbolic functions
registered for the duration of one export only (never left installed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def _full_symbolic(g: Any, sizes: Any, value: Any, dtype: Any, *rest: Any) -> Any:
    """``aten::full`` as eager types it: an integer fill without a dtype is int64 (the
    exporter's own symbolic makes it float32, which breaks e.g. transformers' SmolVLM vision
    position ids, ``torch.full(..., fill_value=0)`` then a Gather); everything else as before."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh
    from torch.onnx._internal.torchscript_exporter import symbolic_opset9 as o9

    const = sh._maybe_get_const(value, "t")
    if (
        sh._is_none(dtype)
        and isinstance(const, torch.Tensor)
        and not (const.is_floating_point() or const.dtype == torch.bool)
    ):
        return g.op("ConstantOfShape", sizes, value_t=const.view(1).to(torch.int64))
    return o9.full(g, sizes, value, dtype, *rest)


@contextlib.contextmanager
def typed_full(opset: int) -> Iterator[None]:
    """``_full_symbolic`` registered for the duration of one export only."""
    torch.onnx.register_custom_op_symbolic("aten::full", _full_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::full", opset)
