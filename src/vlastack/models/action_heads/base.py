"""Base class of every action head: the (context, mask) → action-chunk contract of ARCHITECTURE.md.

A head maps prefix tokens ``context`` (B, N, D) with ``context_mask`` (B, N) (True = valid) to a
chunk of ``action_horizon`` normalized actions of size ``action_dim``. ``loss`` returns one value per
sample (B,) so the training loop can weight or mask samples; padded steps (``action_is_pad``) and
padded action dims (``action_dim_mask`` False) never contribute.
"""

from __future__ import annotations

import torch
from torch import nn

from vlastack.errors import ConfigError
from vlastack.functional.noise import randn
from vlastack.models.layers.inference import is_capturing


class ActionHead(nn.Module):
    """Common plumbing: sizes, a context projection to the head width, and input checks."""

    # The largest |normalized action| the head can output (diffusion's x̂0 clip, the bins' edge),
    # or None when unbounded. Training checks it against the data's normalized stats.
    output_range: float | None = None
    output_range_reason = ""  # why it is bounded, for the error that names it

    def __init__(self, context_dim: int, action_dim: int, action_horizon: int, width: int) -> None:
        super().__init__()
        for name, v in (
            ("context_dim", context_dim),
            ("action_dim", action_dim),
            ("action_horizon", action_horizon),
            ("width", width),
        ):
            if int(v) < 1:
                raise ConfigError(f"action head: {name} must be >= 1, got {v}")
        self.context_dim = int(context_dim)
        self.action_dim = int(action_dim)
        self.action_horizon = int(action_horizon)
        self.width = int(width)
        self.context_proj = nn.Linear(self.context_dim, self.width)

    def _check(self, context: torch.Tensor, context_mask: torch.Tensor, actions=None) -> None:
        if context.dim() != 3 or context.shape[-1] != self.context_dim:
            raise ConfigError(
                f"{type(self).__name__}: context must be (B, N, {self.context_dim}), "
                f"got {tuple(context.shape)}; check the projector output width (context_dim)."
            )
        if context_mask.shape != context.shape[:2]:
            raise ConfigError(
                f"{type(self).__name__}: context_mask must be {tuple(context.shape[:2])}, "
                f"got {tuple(context_mask.shape)}"
            )
        # a data-dependent branch: under torch.compile it would break the graph, so it runs
        # eagerly; a CUDA graph capture runs it before the capture (graphs.GraphedHead)
        if (
            not torch.compiler.is_compiling()
            and not is_capturing()
            and not bool(context_mask.any(dim=1).all())
        ):
            raise ConfigError(
                f"{type(self).__name__}: every sample needs at least one valid context token "
                "(a row of context_mask is all False); check the tokenizer/encoder padding."
            )
        if actions is not None and tuple(actions.shape[1:]) != (
            self.action_horizon,
            self.action_dim,
        ):
            raise ConfigError(
                f"{type(self).__name__}: actions must be (B, {self.action_horizon}, {self.action_dim}) "
                f"(action_horizon, action_dim), got {tuple(actions.shape)}; match the dataset's "
                "embodiment spec and the recipe's action_horizon."
            )

    def initial_noise(
        self, context: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """A sampler's starting noise (B, H, A) ~ N(0, I), in the dtype the head computes in (the
        context's: a head cast to bf16 is given bf16 tokens; an int8 or autocast head float32
        ones). Drawn in float32 and then cast, so one seed gives the same noise whatever the
        dtype (torch's bf16 ``randn`` draws other numbers for some sizes)."""
        shape = (context.shape[0], self.action_horizon, self.action_dim)
        z = randn(shape, generator, context.device)
        return z if not context.is_floating_point() else z.to(context.dtype)

    # bf16 (``head.to(torch.bfloat16)``, run in eager with bf16 context): the largest
    # |action - float32 action| (normalized units, same weights, inputs and noise) that
    # ``tests/test_action_heads_bf16.py`` holds the head to, or None where the head does not
    # claim bf16, with the reason in ``bf16_blocker``.
    bf16_atol: float | None = None
    bf16_blocker = "this head does not declare bf16 support"

    # CUDA-graph replay (graphs.GraphedHead): heads whose sampler has fixed shapes and no host
    # synchronization set the blocker to None; stochastic ones also take their initial noise as
    # ``noise=``.
    cuda_graph_blocker: str | None = "this head does not declare a capturable sampler"
    cuda_graph_noise = False

    def cuda_graph_support(self) -> tuple[bool, str]:
        """(whether ``sample_actions`` can be recorded as a CUDA graph, why not)."""
        return self.cuda_graph_blocker is None, self.cuda_graph_blocker or ""

    # ---- self-description: what the rest of vlastack reads instead of the head's registry name

    # Which ONNX graph family ``export/onnx.py`` builds for this head: "single_pass" (one decoder
    # pass is the whole sampler: ``<name>_sampler``), "flow" (``prefix_cache`` + ``velocity``:
    # ``<name>_prefix``/``_step``/``_sampler``, the Euler loop unrolled), "diffusion" (``_prefix``
    # + ``predict_noise``: prefix/step and the DDIM loop); None: not exportable (token heads stop
    # on the tokens they read). Real-time-chunking guidance is ``sample_actions_guided``.
    export_kind: str | None = None
    # The action normalization the head was published with where it needs a bounded range (the
    # ``heads`` suite sets it); None keeps the recipe's.
    suite_action_normalization: str | None = None

    @classmethod
    def suite_kwargs(cls, size: dict[str, object], depth: int) -> dict[str, object]:
        """``head_kwargs`` for the ``heads`` suite: the recipe head's ``size`` (width, num_heads)
        and ``depth``, plus the head's own sampler settings."""
        return {**size, "depth": depth}

    def loss(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        actions: torch.Tensor,
        action_is_pad: torch.Tensor,
        action_dim_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def sample_actions(
        self,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError
