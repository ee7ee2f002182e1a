"""OpenVLA-style action binning (Kim et al. 2406.09246; openvla-oft ``action_tokenizer.py``).

Actions are first normalized per dimension with the 1st/99th percentiles to [−1, 1]
(``normalize_q01_q99``), then discretized into 256 uniform bins: ``edges = linspace(−1, 1, 256)``,
``d = digitize(x̂, edges) ∈ [1, 256]``, token id ``vocab_size − d`` (the last 256 ids of a language
vocabulary). Decoding clips the bin index to [0, 254] and returns one of the 255 bin centers.
"""

from __future__ import annotations

import torch

NUM_BINS = 256


def bin_edges(num_bins: int = NUM_BINS, device: torch.device | str | None = None) -> torch.Tensor:
    """``linspace(−1, 1, num_bins)`` (OpenVLA calls these ``bins``)."""
    return torch.linspace(-1.0, 1.0, num_bins, dtype=torch.float32, device=device)


def bin_centers(num_bins: int = NUM_BINS, device: torch.device | str | None = None) -> torch.Tensor:
    """Midpoints of consecutive edges: ``num_bins − 1`` values (built on ``device``: no
    host-to-device copy, which a CUDA-graph capture forbids)."""
    e = bin_edges(num_bins, device)
    return (e[:-1] + e[1:]) / 2


def normalize_q01_q99(
    x: torch.Tensor, q01: torch.Tensor, q99: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """x̂ = clip(2(x − q01)/(q99 − q01 + 1e-8) − 1, −1, 1); dims where ``mask`` is False pass through
    unchanged (OpenVLA leaves the gripper alone); dims with q01 == q99 map to 0."""
    y = (2 * (x - q01) / (q99 - q01 + 1e-8) - 1).clamp(-1, 1)
    y = torch.where(q01 == q99, torch.zeros_like(y), y)
    if mask is not None:
        y = torch.where(mask, y, x)
    return y


def unnormalize_q01_q99(
    y: torch.Tensor, q01: torch.Tensor, q99: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """x = 0.5(x̂ + 1)(q99 − q01 + 1e-8) + q01 (inverse of ``normalize_q01_q99`` inside the range)."""
    x = 0.5 * (y + 1) * (q99 - q01 + 1e-8) + q01
    if mask is not None:
        x = torch.where(mask, x, y)
    return x


def digitize(x: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """``np.digitize(clip(x, −1, 1), edges)`` ∈ [1, num_bins], long. 1.0 lands in bin num_bins."""
    edges = bin_edges(num_bins).to(x.device)
    return torch.bucketize(x.clamp(-1, 1).contiguous(), edges, right=True)


def bin_index(x: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Class index in [0, num_bins − 1] (= digitize − 1), the target of a per-dimension classifier."""
    return digitize(x, num_bins) - 1


def index_to_value(idx: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Class index → bin center; index is clipped to [0, num_bins − 2] as OpenVLA does."""
    centers = bin_centers(num_bins, idx.device)
    return centers[idx.clamp(0, num_bins - 2)]


def actions_to_token_ids(
    x: torch.Tensor, vocab_size: int, num_bins: int = NUM_BINS
) -> torch.Tensor:
    """Normalized actions → language token ids ``vocab_size − digitize(x)``."""
    return vocab_size - digitize(x, num_bins)


def token_ids_to_actions(
    ids: torch.Tensor, vocab_size: int, num_bins: int = NUM_BINS
) -> torch.Tensor:
    """Token ids → bin centers: ``idx = clip(vocab_size − id − 1, 0, num_bins − 2)``."""
    return index_to_value(vocab_size - ids - 1, num_bins)
