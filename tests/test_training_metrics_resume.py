"""metrics.jsonl after a killed run is resumed (issue 27.7): rows past the checkpoint the run
resumes from are dropped (they are logged again), so no step appears twice; a row torn by the
kill is dropped too."""

from __future__ import annotations

import json

from vlastack.training.logging import RunLogger, read_metrics


def test_resume_drops_rows_past_the_checkpoint_and_a_torn_line(tmp_path):
    log = RunLogger(tmp_path, backend="none")
    for step in range(1, 8):
        log.scalars({"train/loss": 1.0 / step}, step)
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 8, "train/lo')  # kill -9 in the middle of a write
    resumed = RunLogger(tmp_path, backend="none", resume_step=4)  # last checkpoint: step 4
    for step in range(5, 9):
        resumed.scalars({"train/loss": 0.5 / step}, step)
    resumed.close()
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == list(range(1, 9))
    assert read_metrics(tmp_path)[4]["train/loss"] == 0.5 / 5  # the resumed run's value
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_fresh_start_with_resume_and_no_checkpoint_drops_everything(tmp_path):
    log = RunLogger(tmp_path, backend="none")
    log.scalars({"train/loss": 1.0}, 1)
    log.close()
    RunLogger(tmp_path, backend="none", resume_step=0).close()
    assert read_metrics(tmp_path) == []
