"""The executor seam without Ray itself: the choice is validated, and a missing Ray says how to
install it. (Ray runs: tests/test_executors_ray.py; the pool: tests/test_eval_rollout.py.)"""

from __future__ import annotations

import sys

import pytest

from vlastack.errors import ConfigError
from vlastack.evaluation.rollout import evaluate
from vlastack.executors import ExecutorChoice, make_executor
from vlastack_test_plugins import fakes

KW = dict(image_size=(16, 16), progress=False)


def test_the_executor_choice_is_checked(tmp_path):
    ckpt = fakes.write_fake_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="add --executor ray"):
        evaluate(ckpt, "fake/reach-easy", episodes_per_task=1, ray_address="x:6379", **KW)
    with pytest.raises(ConfigError, match=r"executor='dask'; expected one of \('pool', 'ray'\)"):
        evaluate(ckpt, "fake/reach-easy", episodes_per_task=1, executor="dask", **KW)


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'vlastack\[ray\]'"):
        make_executor(ExecutorChoice("ray"), print, workers=1)
