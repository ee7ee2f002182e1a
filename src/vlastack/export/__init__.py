"""Deployment exports: post-training int8 / ternary (BitVLA 1.58-bit) quantization of checkpoints
with an accuracy/latency/memory comparison, and ONNX export of the continuous action heads."""

from vlastack.export.comparison import compare
from vlastack.export.onnx import export_onnx
from vlastack.export.quantize import (
    load_policy,
    quantize_checkpoint,
    quantize_dynamic_int8,
    ternarize_checkpoint,
)

__all__ = [
    "compare",
    "export_onnx",
    "load_policy",
    "quantize_checkpoint",
    "quantize_dynamic_int8",
    "ternarize_checkpoint",
]
