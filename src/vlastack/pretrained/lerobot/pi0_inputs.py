"""What LeRobot 0.6.1 does to a pi0 / pi0.5 observation before ``sample_actions``: the prompt
text, its tokenization, the images' resize-with-pad, the state padding.

* Prompt. pi0 (``pi0_new_line_processor``): the task with ``"\\n"`` appended unless it ends with
  one. pi0.5 (``pi05_prepare_state_tokenizer_processor_step``, after the normalizer): the
  normalized state digitized into 256 bins over [-1, 1] (``np.digitize(x, linspace(-1, 1,
  257)[:-1]) - 1``, so below -1 gives -1 and at or above 1 - 2/256 gives 255), written as
  ``"Task: {task.strip() with '_' and '\\n' as spaces}, State: {bins};\\nAction: "``.
* Tokens (``tokenizer_processor``): PaliGemma's tokenizer (``google/paligemma-3b-pt-224``),
  truncated to ``tokenizer_max_length`` and right-padded to it (48 for pi0, 200 for pi0.5),
  attention mask as bool. ``load_tokenizer`` finds it in a local folder or the local Hugging
  Face cache (``AutoTokenizer.from_pretrained(..., local_files_only=True)``; never the network).
  ``ByteTokenizer`` is the byte-level stand-in the fixtures were made with (their README:
  ``[2] + [3 + b for b in utf8]``, truncated, right-padded with 0); pass it (or ``"bytes"``) as
  the loader's ``tokenizer`` to reproduce the fixtures: it is not PaliGemma's vocabulary.
* Images (``PI0Policy._preprocess_images``): (B, C, H, W) in [0, 1] ->, unless already at
  ``image_resolution``, bilinear resize (``align_corners=False``) keeping the aspect ratio
  (``ratio = max(W / w, H / h)``, sizes ``int(H / ratio)``, ``int(W / ratio)``), clamp to [0, 1],
  pad centred with 0 (odd remainder at the bottom/right) -> ``* 2 - 1``. Cameras named
  ``empty_camera_<i>`` (config ``empty_cameras``) are all -1 with mask False.
* State (pi0): zero-padded to ``max_state_dim``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from vlastack.errors import ConfigError

PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"
TOKENIZER_ENV = "VLASTACK_LEROBOT_TOKENIZER"


# ---- prompts ---------------------------------------------------------------------------------
def pi0_prompt(task: str) -> str:
    return task if task.endswith("\n") else f"{task}\n"


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Normalized state -> bins in -1..255 (openpi ``PaligemmaTokenizer.tokenize``)."""
    return np.digitize(state, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1


def pi05_prompt(task: str, normalized_state: np.ndarray) -> str:
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    bins = " ".join(map(str, discretize_state(normalized_state)))
    return f"Task: {cleaned}, State: {bins};\nAction: "


# ---- tokenizers ------------------------------------------------------------------------------
class Tokenizer(Protocol):
    name: str

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length) int64 ids and bool mask, truncated and right-padded."""
        ...


class ByteTokenizer:
    """The fixtures' byte-level stand-in: ``[2] + [3 + b for b in utf8]``, pad id 0."""

    name = "bytes (the LeRobot fixtures' stand-in, not PaliGemma's vocabulary)"

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), max_length, dtype=torch.int64)
        mask = torch.zeros(len(texts), max_length, dtype=torch.bool)
        for i, text in enumerate(texts):
            row = ([2] + [3 + b for b in text.encode("utf-8")])[:max_length]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
            mask[i, : len(row)] = True
        return ids, mask


class NoTokenizer:
    """A policy loaded only to write it back (``vlastack export lerobot``): no prompts."""

    name = "none (loaded for export)"

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise ConfigError(
            "this pi0 policy was loaded without a tokenizer (tokenizer=False, for export); "
            "load it again with PaliGemma's tokenizer to run it"
        )


class HFTokenizer:
    """A transformers tokenizer called as LeRobot's ``TokenizerProcessorStep`` calls it."""

    def __init__(self, tok: Any, name: str) -> None:
        self.tok = tok
        self.name = name

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tok(
            list(texts),
            max_length=max_length,
            truncation=True,
            padding="max_length",
            padding_side="right",
            return_tensors="pt",
        )
        return out["input_ids"].to(torch.int64), out["attention_mask"].to(torch.bool)


def load_tokenizer(spec: Any, name: str, checkpoint: Path) -> Tokenizer:
    """The tokenizer a pi0 policy uses. ``spec``: a tokenizer object (used as is), False (none:
    a policy loaded to be written back), ``"bytes"``
    (``ByteTokenizer``), a folder holding a transformers tokenizer, or None: then the environment
    variable ``VLASTACK_LEROBOT_TOKENIZER`` (same choices), a ``tokenizer/`` folder inside the
    checkpoint, and finally ``name`` (the processor JSON's ``tokenizer_name``) in the local
    Hugging Face cache. Nothing is downloaded; a miss is a ConfigError saying what to do."""
    if spec is False:
        return NoTokenizer()
    if spec is None:
        spec = os.environ.get(TOKENIZER_ENV) or None
    if spec is None and (checkpoint / "tokenizer").is_dir():
        spec = checkpoint / "tokenizer"
    if spec is not None and not isinstance(spec, (str, Path)):
        return spec  # type: ignore[no-any-return]
    if spec == "bytes":
        return ByteTokenizer()
    from transformers import AutoTokenizer

    if spec is not None:
        folder = Path(spec)
        if not folder.is_dir():
            raise ConfigError(
                f"tokenizer {str(spec)!r} is not a folder (nor 'bytes'); pass a folder holding "
                "PaliGemma's tokenizer files (tokenizer.json / tokenizer.model)"
            )
    else:
        from vlastack.pretrained.lerobot.hub import resolve_hub_id

        try:
            folder = resolve_hub_id(name)
        except ConfigError:
            raise ConfigError(
                f"the tokenizer {name!r} (policy_preprocessor.json 'tokenizer_name') is not in "
                f"the local Hugging Face cache; download it once with `hf download {name}` (a "
                "gated repo: accept its licence on the hub first), or pass tokenizer=<folder> / "
                f"set {TOKENIZER_ENV}=<folder>"
            ) from None
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{folder} holds no tokenizer transformers can load ({type(exc).__name__}: {exc}); "
            "it needs PaliGemma's tokenizer.json (or tokenizer.model with sentencepiece)"
        ) from None
    target = str(folder)
    return HFTokenizer(tok, target)


# ---- images and state ------------------------------------------------------------------------
def resize_with_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> (B, C, size, size) in [-1, 1], as LeRobot's
    ``_preprocess_images`` with openpi's centred ``resize_with_pad_torch``."""
    x = images.to(torch.float32).permute(0, 2, 3, 1)  # LeRobot works channels-last here
    if tuple(x.shape[1:3]) != (size, size):
        x = x.permute(0, 3, 1, 2)
        _, _, h, w = x.shape
        ratio = max(w / size, h / size)
        rh, rw = int(h / ratio), int(w / ratio)
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
        x = x.clamp(0.0, 1.0)
        top, rem_h = divmod(size - rh, 2)
        left, rem_w = divmod(size - rw, 2)
        x = F.pad(x, (left, left + rem_w, top, top + rem_h), mode="constant", value=0.0)
        x = x.permute(0, 2, 3, 1)
    x = x * 2.0 - 1.0
    return x.permute(0, 3, 1, 2)


def pad_state(state: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dimension to ``dim`` (unchanged when already at least ``dim``)."""
    if state.shape[-1] >= dim:
        return state
    return F.pad(state, (0, dim - state.shape[-1]))
