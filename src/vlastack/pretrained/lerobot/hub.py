"""Hugging Face hub ids (``lerobot/act_aloha_sim_transfer_cube_human``) resolved from the local
cache only: vlastack never downloads a checkpoint by itself.

``resolve_hub_id`` returns the cached snapshot folder of ``owner/name`` (or ``owner/name@rev``)
through ``huggingface_hub.snapshot_download(repo_id, local_files_only=True)`` with the cache
folder read at call time (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``); without ``huggingface_hub`` installed it reads the same cache
layout itself (``models--<owner>--<name>/refs/<rev>`` names the commit,
``snapshots/<commit>/`` holds the files). A repo absent from the cache is a ConfigError naming
the id, the cache folder and the command that downloads it. A LeRobot hub repo holds the
``pretrained_model`` files at its root, so the snapshot folder is what the formats load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vlastack.errors import ConfigError

# owner/name[@revision], as the hub spells repo ids (no leading '.', '/', '~')
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[\w./-]+)?$")


def looks_like_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not text.endswith((".json", ".safetensors"))


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _not_cached(repo_id: str, cache: Path, why: str = "") -> ConfigError:
    return ConfigError(
        f"{repo_id!r} is neither a folder here nor a model in the local Hugging Face cache "
        f"({cache}{'; ' + why if why else ''}). vlastack reads hub checkpoints from the cache "
        f"only: download it first with `hf download {repo_id}` (huggingface_hub >= 1.0; older: "
        f"`huggingface-cli download {repo_id}`), or pass the pretrained_model folder itself"
    )


def _from_layout(repo_id: str, revision: str, cache: Path) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snap = repo / "snapshots" / commit
    if not snap.is_dir():
        raise _not_cached(repo_id, cache)
    return snap


def resolve_hub_id(text: str) -> Path:
    """The cached snapshot folder of hub id ``text`` (``owner/name[@revision]``)."""
    repo_id, _, revision = text.partition("@")
    cache = hub_cache_dir()
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return _from_layout(repo_id, revision or "main", cache)
    try:
        folder = snapshot_download(
            repo_id, revision=revision or None, cache_dir=str(cache), local_files_only=True
        )
    except LocalEntryNotFoundError:
        raise _not_cached(repo_id, cache) from None
    except (OSError, ValueError) as exc:  # e.g. an invalid repo id
        raise _not_cached(repo_id, cache, f"{type(exc).__name__}: {exc}") from None
    return Path(str(folder))


def resolve_checkpoint_arg(text: str | Path) -> Path:
    """A checkpoint argument as a local path: an existing path as given, a hub id that is not
    a local path from the cache (``resolve_hub_id``), anything else as given (the caller's
    'no such folder' error then applies)."""
    p = Path(text)
    if p.exists() or not looks_like_hub_id(str(text)):
        return p
    return resolve_hub_id(str(text))
