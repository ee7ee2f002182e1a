"""The text tokenizer of LeRobot's ``tokenizer_processor`` step, loaded without network access.

LeRobot 0.6.1's ``TokenizerProcessorStep`` calls ``AutoTokenizer.from_pretrained(tokenizer_name)``
and then ``tokenizer(texts, max_length=, truncation=, padding=, padding_side=,
return_tensors="pt")``; the ids and the attention mask (made bool) become
``observation.language.tokens`` / ``observation.language.attention_mask``. vlastack does the
same call on a tokenizer found locally (``load_tokenizer``):

* ``tokenizer_name`` a folder (absolute, or relative to the checkpoint folder, as a fixture's
  ``../smolvlm2_tiny_config``; then relative to the working directory, as LeRobot reads it):
  ``AutoTokenizer.from_pretrained(folder, local_files_only=True)``;
* a hub id (``HuggingFaceTB/SmolVLM2-500M-Video-Instruct``): the same from the local Hugging
  Face cache only; absent, a ConfigError naming the id and the ``hf download`` command.

``ByteTokenizer`` is the stand-in the LeRobot fixtures were generated with (their README,
"Tokenization"): ``ids = [2] + [3 + b for b in text.encode('utf-8')]``, truncated to
``max_length``, padded with id 0 / mask 0 on ``padding_side``. It has the same call signature as a
Hugging Face tokenizer and is passed explicitly (``load_lerobot_smolvla(..., tokenizer=
ByteTokenizer())``); vlastack never substitutes it by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.hub import hub_cache_dir, looks_like_hub_id

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ByteTokenizer:
    """The LeRobot fixtures' byte-level tokenizer (see the module docstring)."""

    bos_id = 2
    offset = 3
    pad_id = 0

    def ids(self, text: str) -> list[int]:
        return [self.bos_id] + [self.offset + b for b in text.encode("utf-8")]

    def __call__(
        self,
        texts: str | list[str],
        *,
        max_length: int | None = None,
        truncation: bool = True,
        padding: str = "longest",
        padding_side: str = "right",
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        del return_tensors
        batch = [texts] if isinstance(texts, str) else list(texts)
        rows = [self.ids(t) for t in batch]
        if truncation and max_length is not None:
            rows = [r[:max_length] for r in rows]
        if padding == "max_length" and max_length is not None:
            width = max_length
        else:
            width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
            ids[i, sl] = torch.tensor(r, dtype=torch.long)
            mask[i, sl] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _download_hint(name: str) -> str:
    return (
        f"download it first with `hf download {name}` (huggingface_hub >= 1.0; older: "
        f"`huggingface-cli download {name}`), or pass a tokenizer folder / object explicitly"
    )


def local_folder(name: str, base: Path) -> Path | None:
    """``name`` as a local folder: relative to ``base`` (the checkpoint folder) first, then as
    given; None when it is no existing folder."""
    p = Path(name).expanduser()
    for cand in [p] if p.is_absolute() else [base / p, p]:
        if cand.is_dir():
            return cand
    return None


def load_tokenizer(name: str, base: Path, *, what: str = "tokenizer") -> Any:
    """The Hugging Face tokenizer ``name`` (a local folder or a hub id in the local cache; see
    the module docstring). ``what`` names the field it came from, for the error."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise ConfigError(f"loading the {what} {name!r} needs transformers ({exc})") from None
    folder = local_folder(name, base)
    if folder is None:
        if not looks_like_hub_id(name):
            raise ConfigError(
                f"{what} {name!r} is neither a folder (looked in {base} and the working "
                "directory) nor a hub id; point it at a tokenizer folder or pass tokenizer="
            )
        folder = cached_snapshot(name, what)
    fix = (
        "put the tokenizer files (tokenizer.json, tokenizer_config.json) there, or pass "
        "tokenizer= explicitly"
    )
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"{what} {name!r} resolves to the folder {folder.resolve()}, which holds no tokenizer "
            f"({' / '.join(TOKENIZER_FILES)}): {fix}"
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # a broken tokenizer.json
        why = " ".join(str(exc).split())
        raise ConfigError(
            f"{what} {name!r} resolves to the folder {folder.resolve()}, which holds no loadable "
            f"tokenizer ({type(exc).__name__}: {why}): {fix}"
        ) from None


def cached_snapshot(name: str, what: str) -> Path:
    """The local Hugging Face cache's snapshot folder of hub id ``name``; a ConfigError naming
    ``what`` (the config field), the id and the download command when it is not cached."""
    from vlastack.pretrained.lerobot.hub import resolve_hub_id

    try:
        return resolve_hub_id(name)
    except ConfigError:
        raise ConfigError(
            f"{what} {name!r} is not in the local Hugging Face cache ({hub_cache_dir()}). "
            "vlastack reads it from local files only: " + _download_hint(name)
        ) from None


def tokenize_like_lerobot(
    tokenizer: Any, step: Any, texts: list[str], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> (ids (B, L) int64, mask (B, L) bool) on ``device``, called with the settings of
    LeRobot's ``TokenizerProcessorStep`` (``step``: max_length, truncation, padding and
    padding_side, as the processor JSON stores them)."""
    out = tokenizer(
        texts,
        max_length=step.max_length,
        truncation=step.truncation,
        padding=step.padding,
        padding_side=step.padding_side,
        return_tensors="pt",
    )
    ids = torch.as_tensor(out["input_ids"], dtype=torch.long)
    mask = torch.as_tensor(out["attention_mask"]).to(torch.bool)
    return ids.to(device), mask.to(device)
