"""What an evaluation runs: the environment module, its tasks, and the policy from a checkpoint.

``load_policy`` is the one way evaluation turns a checkpoint folder into a policy: a folder a
registered format claims (``vlastack.policy_formats``) loads with it, any other as a native
``Policy``; a mixture checkpoint acts as the member named or the one matching the environment.
Checkpoint folders are read through ``vlastack.checkpoints`` (not the training package).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from vlastack.embodiment import EmbodimentSpec
from vlastack.errors import ConfigError, MissingExtraError, VlastackError
from vlastack.policy_formats import load_registered_policy, resolve_checkpoint_arg


class PolicyLike(Protocol):
    def reset(self) -> None: ...

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


PolicyFactory = Callable[[], PolicyLike]


def env_module(env_name: str) -> ModuleType:
    """The module providing ``make_env``/``list_tasks``/``difficulty_of`` for ``env_name``
    (``vlastack.envs``, whose registry also holds the environments plugins register)."""
    try:
        import vlastack.envs as envs
    except ImportError as exc:
        raise MissingExtraError(
            exc.name or "gymnasium", "sim", f"simulated environment {env_name!r}"
        ) from exc
    if not hasattr(envs, "make_env"):
        raise ConfigError(f"vlastack.envs in this build has no make_env; cannot run {env_name!r}")
    return envs


def resolve_tasks(env_name: str) -> list[str]:
    """A suite name (``metaworld/mt10``) expands to its tasks; a single task stays itself."""
    mod = env_module(env_name)
    try:
        tasks = list(mod.list_tasks(env_name))
    except (VlastackError, KeyError, ValueError):
        tasks = []
    return tasks or [env_name]


def difficulty(env_name: str, task: str) -> str | None:
    fn = getattr(env_module(env_name), "difficulty_of", None)
    if fn is None:
        return None
    try:
        return None if (d := fn(task)) is None else str(d)
    except Exception:
        return None


def mixture_members(checkpoint: str | Path) -> list[Any]:
    """The robots a mixture checkpoint was trained on (``EmbodimentEntry`` list, default
    first), read from its JSON files only; empty for a single-robot or unreadable checkpoint
    (loading it then reports what is wrong)."""
    try:
        from vlastack.checkpoints import FORMAT_VERSION, Checkpoint, resolve_checkpoint

        path = Path(resolve_checkpoint(checkpoint))
        config = json.loads((path / "config.json").read_text())
        if not isinstance(config, dict) or not config.get("mixture"):
            return []
        normalization = json.loads((path / "normalization.json").read_text())
    except (ImportError, OSError, ValueError, VlastackError):
        return []
    # Weights are not needed to list the members, so none are read.
    ckpt = Checkpoint(path, {}, config, normalization, None, FORMAT_VERSION)
    return ckpt.embodiments()


def check_embodiment_name(checkpoint: str | Path, name: str) -> None:
    """Raise a ConfigError naming the members when ``name`` (``--embodiment``) is not one of a
    mixture checkpoint's members (by member name, or a robot_type naming exactly one)."""
    members = mixture_members(checkpoint)
    if not members:
        return  # a single-robot checkpoint: Policy.from_checkpoint checks the name
    by_robot = [m for m in members if m.embodiment and m.embodiment.robot_type == name]
    if any(m.name == name for m in members) or len(by_robot) == 1:
        return
    shared = " (that robot_type is shared by several; use the member name)" if by_robot else ""
    raise ConfigError(
        f"--embodiment {name!r}{shared}: {checkpoint} was trained on a mixture of "
        f"{[m.name for m in members]}; pass one of those member names"
    )


def load_policy(
    checkpoint: str | Path,
    *,
    expect_embodiment: EmbodimentSpec | None = None,
    embodiment: str | None = None,
) -> PolicyLike:
    """Load a checkpoint folder as a Policy: a folder that a registered checkpoint format claims
    (``vlastack.policy_formats``, added by plugins) loads with it, any other as a native one.

    For a mixture checkpoint, ``embodiment`` names the member to act as; without it the member
    whose embodiment matches ``expect_embodiment`` (the environment's) is chosen, else the first
    (the environment check then explains the mismatch or remaps). A single-robot checkpoint
    loads as before (``expect_embodiment`` is left to that check, so ``--action-remap pad``
    still works).
    """
    path = resolve_checkpoint_arg(checkpoint)  # a hub id: its cached snapshot
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; pass a checkpoint folder")
    other = load_registered_policy(path, expect_embodiment=expect_embodiment, embodiment=embodiment)
    if other is not None:
        runner = os.environ.get("VLASTACK_RUNNER") or "auto"  # `vlastack eval --runner`
        if hasattr(other, "use_runner"):
            other.use_runner(runner)  # SmolVLA / pi0 / pi0.5: eager or onnxruntime
        elif runner not in ("auto", "eager"):
            raise ConfigError(f"--runner {runner}: {path} is an imported policy that runs eagerly")
        return other
    try:
        from vlastack.policy import Policy
    except ImportError as exc:
        raise ConfigError(f"cannot load {path}: vlastack.policy is unavailable ({exc})") from exc
    members = mixture_members(path)
    if not members:
        return Policy.from_checkpoint(path, embodiment=embodiment)
    if embodiment is not None:
        check_embodiment_name(path, embodiment)
        return Policy.from_checkpoint(path, embodiment=embodiment)
    fits = expect_embodiment is not None and any(
        m.embodiment is not None and not m.embodiment.differences(expect_embodiment)
        for m in members
    )
    return Policy.from_checkpoint(path, expect_embodiment=expect_embodiment if fits else None)


def resolve_checkpoint_dir(checkpoint: str | Path) -> Path:
    """A run folder or a ``last`` pointer resolves to its step folder (so the manifest hashes the
    weights actually used); other folders stay as given."""
    try:
        from vlastack.checkpoints import resolve_checkpoint

        return Path(resolve_checkpoint(checkpoint))
    except (ImportError, VlastackError):
        return Path(checkpoint).resolve()


def checkpoint_label(checkpoint: str | Path) -> str:
    """``runs/pick/checkpoints/step_001000`` -> ``pick@step_001000``; else the folder name."""
    p = Path(checkpoint)
    if p.name.startswith("step_"):
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        return f"{run.name}@{p.name}"
    return p.name


def checkpoint_embodiment(checkpoint: str | Path) -> EmbodimentSpec | None:
    p = Path(checkpoint) / "embodiment.json"
    return EmbodimentSpec.load(p) if p.exists() else None


def policy_embodiment(policy: Any) -> EmbodimentSpec | None:
    emb = getattr(policy, "embodiment", None)
    if emb is None:
        emb = (getattr(policy, "metadata", None) or {}).get("embodiment")
    if isinstance(emb, dict):
        emb = EmbodimentSpec.from_dict(emb, source="policy metadata")
    return emb if isinstance(emb, EmbodimentSpec) else None


__all__ = [
    "PolicyFactory",
    "PolicyLike",
    "check_embodiment_name",
    "checkpoint_embodiment",
    "checkpoint_label",
    "difficulty",
    "env_module",
    "load_policy",
    "mixture_members",
    "policy_embodiment",
    "resolve_checkpoint_dir",
    "resolve_tasks",
]
