"""Run logs: TensorBoard event files (default), Weights & Biases (optional), and metrics.jsonl.

Every scalar also goes to ``<run>/metrics.jsonl`` (one JSON object per line) so that reports and
tests can read a run without TensorBoard. W&B is imported only when asked for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vlastack.errors import require


class RunLogger:
    """Writes scalars and figures; a no-op on non-zero ranks (``enabled=False``)."""

    def __init__(
        self,
        run_dir: Path,
        backend: str = "tensorboard",
        enabled: bool = True,
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        """``resume_step``: the run resumes from the checkpoint of that step, so rows logged
        after it (by the killed run; they are logged again) and a row torn by the kill are
        dropped from ``metrics.jsonl`` first: no step appears twice."""
        self.enabled = enabled
        self.backend = backend
        self.run_dir = Path(run_dir)
        self._tb: Any = None
        self._wandb: Any = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _truncate_metrics(self.run_dir / "metrics.jsonl", resume_step)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a")
        if backend == "tensorboard":
            require("tensorboard", "train", "TensorBoard logs (or pass --log=none)")
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
        elif backend == "wandb":
            wandb = require("wandb", "train", "Weights & Biases logging")
            self._wandb = wandb.init(
                dir=str(self.run_dir), config=config or {}, name=self.run_dir.name
            )

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_text(tag, text, step)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_figure(tag, fig, step, close=False)
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(fig)}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _truncate_metrics(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a kill
        if isinstance(row, dict) and int(row.get("step", 0)) <= last_step:
            keep.append(line)
    from vlastack.atomic import write_text

    write_text(path, "".join(f"{line}\n" for line in keep))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
