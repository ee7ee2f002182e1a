"""The survey's proposed checks as one-call benchmark suites, each writing report-ready folders.

They sit above evaluation (they evaluate) and training (``heads`` and ``transfer`` train):

``heads`` (``head_to_head``): the same recipe backbone, data and training budget for each action
head, trained and evaluated. ``stress`` (``perturbation_stress``): evaluation-time perturbations
(``envs/perturbations.py``), reported as drops from unperturbed success on the same seeds.
``transfer`` (``embodiment_transfer``): train on the native Sawyer, evaluate zero-shot and after a
small fine-tune on a re-parametrized 7-d Sawyer (``envs/reparam.py``). ``chain``
(``long_horizon``): ≥10 subtasks in a row (``envs/chains.py``, CALVIN-style average chain
length) against the modular perception/planning/control baseline (``envs/modular.py``).
``backbone``: the same recipe with its pretrained encoders frozen, fine-tuned, LoRA-tuned and
trained from scratch. ``runtime`` (``realtime``): action-runtime strategies x inference delays x
policies in a simulator, in virtual time (``serving/simulate.py``).
``common`` holds what they share, ``prepare`` their datasets and training runs, ``page`` the
results page every suite writes (``section.md``: Wilson intervals, spread across training seeds,
command, machine, date; PNG plots).
"""

from vlastack.experiments.backbone import backbone
from vlastack.experiments.common import SuitePolicy, register_env_names, write_results
from vlastack.experiments.embodiment_transfer import transfer
from vlastack.experiments.head_to_head import DEFAULT_HEADS, head_kwargs, heads
from vlastack.experiments.long_horizon import chain
from vlastack.experiments.perturbation_stress import stress, stress_suite
from vlastack.experiments.prepare import ensure_dataset, split_envs
from vlastack.experiments.realtime import runtime_suite

__all__ = [
    "DEFAULT_HEADS",
    "SuitePolicy",
    "backbone",
    "chain",
    "ensure_dataset",
    "head_kwargs",
    "heads",
    "register_env_names",
    "runtime_suite",
    "split_envs",
    "stress",
    "stress_suite",
    "transfer",
    "write_results",
]
