"""``vlastack export quantize --method int8`` stores the int8 weights themselves (issue 27.7): the
quantized linears are int8 in the file (plus one float scale per output row), the file is smaller
by what that saves, and the checkpoint loads back to the same outputs as the in-memory model."""

from __future__ import annotations

import numpy as np
import torch
from safetensors import safe_open

from _export_tiny import tiny_obs, write_tiny_checkpoint
from vlastack.export.quantize import quantize_checkpoint
from vlastack.policy import Policy


def test_int8_checkpoint_stores_int8_and_loads_back_the_same(tmp_path):
    torch.set_num_threads(1)
    src = write_tiny_checkpoint(tmp_path / "fp32", "l1", width=64)
    dst = quantize_checkpoint(src, tmp_path / "int8", method="int8", backend="weight_only")
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        fp32 = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    with safe_open(str(dst / "model.safetensors"), "pt") as f:
        stored = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    int8_keys = [k for k, dt in stored.items() if dt == "I8"]
    assert len(int8_keys) >= 4, stored
    assert all(fp32[k.removesuffix("::int8")] == "F32" for k in int8_keys)
    # every stored int8 tensor replaces a float weight of the source: the saving is 3 of 4 bytes
    # per value, less one float32 scale per row
    src_bytes = (src / "model.safetensors").stat().st_size
    dst_bytes = (dst / "model.safetensors").stat().st_size
    assert dst_bytes < 0.75 * src_bytes, (src_bytes, dst_bytes)
    # loads back: same actions as the int8 model in memory (fp32 weights on the int8 grid)
    ref = Policy.from_checkpoint(src)
    from vlastack.export.quantize import quantization_info
    from vlastack.models.quantize import fake_quantize_int8_

    fake_quantize_int8_(ref.model, quantization_info(dst)["parts"])
    loaded = Policy.from_checkpoint(dst)
    for s in range(3):
        np.testing.assert_allclose(
            loaded.infer(tiny_obs(s))["actions"], ref.infer(tiny_obs(s))["actions"], atol=1e-4
        )
