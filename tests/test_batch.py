"""The typed model batch (vlastack.batch): one spelling of each key. A misspelled key fails where
the batch is made or read, with an error naming the key and the spelling meant; plain dicts are
accepted at the edges (VLA, Policy.predict, the training loop) and checked there."""

from __future__ import annotations

import pickle

import pytest
import torch

from vlastack.batch import Batch, BatchKeyError, as_batch, check_key
from vlastack.errors import DataError
from vlastack.observation import Observation, observation_batch


@pytest.mark.parametrize(
    "key,meant",
    [
        ("observation.sate", "observation.state"),
        ("state", "observation.state"),
        ("observation/state", "observation.state"),
        ("prompt", "task"),
        ("tasks", "task"),
        ("actions", "action"),
        ("action_is_pads", "action_is_pad"),
        ("observation.image.front", "observation.images.front"),
        ("observation/front", "observation.images.front"),
        ("images/wrist", "observation.images.wrist"),
    ],
)
def test_a_misspelled_key_names_itself_and_the_spelling_meant(key, meant):
    with pytest.raises(BatchKeyError) as err:
        Batch({key: torch.zeros(1)})
    assert f"'{key}'" in str(err.value) and f"did you mean '{meant}'" in str(err.value)
    assert isinstance(err.value, DataError) and not isinstance(err.value, KeyError)
    b = Batch()
    with pytest.raises(BatchKeyError, match=f"'{key}'"):
        b[key] = 1
    with pytest.raises(BatchKeyError, match=f"'{key}'"):
        b.get(key)  # a reader's typo fails too, instead of reading None


def test_a_key_confusable_with_none_passes_and_a_bare_prefix_does_not():
    check_key("my_plugin_feature")  # a plugin model's own field: not another spelling
    check_key("observation.language.tokens")  # a dataset / imported policy's vector feature
    with pytest.raises(BatchKeyError, match="'observation.images'.*observation.images.<camera>"):
        check_key("observation.images")
    with pytest.raises(BatchKeyError, match="is a int"):
        check_key(3)


def test_valid_keys_and_typed_reads():
    state, act = torch.randn(2, 1, 4), torch.randn(2, 8, 3)
    b = as_batch(
        {
            "observation.images.front": torch.rand(2, 1, 3, 8, 8),
            "observation.images.front_is_pad": torch.zeros(2, 1, dtype=torch.bool),
            "observation.state": state,
            "observation.environment_state": torch.zeros(2, 1, 5),
            "observation.velocity": torch.zeros(2, 1, 2),  # another dataset vector feature
            "task": ["a", "b"],
            "action": act,
            "episode_index": torch.tensor([0, 1]),
        }
    )
    assert b.state is state and b.action is act and b.task == ["a", "b"]
    assert b.cameras == ["front"] and b.image("front").shape == (2, 1, 3, 8, 8)
    assert b.image_is_pad("front") is not None and b.image("wrist") is None
    assert b.get("action_is_pad") is None and "action_is_pad" not in b
    assert as_batch(b) is b
    again = pickle.loads(pickle.dumps(b))  # DataLoader workers send batches across processes
    assert isinstance(again, Batch) and again.keys() == b.keys()
    moved = b.map(lambda t: t.double(), ["observation.state"])
    assert isinstance(moved, Batch) and moved.state.dtype == torch.float64
    assert moved.action is act


def test_observation_batch_is_a_batch():
    obs = Observation(images={"front": torch.rand(3, 4, 4)}, state=torch.zeros(2), task="go")
    b = observation_batch([[obs]], image_size=(4, 4), pad_cameras=["wrist"])
    assert isinstance(b, Batch)
    assert b.cameras == ["front", "wrist"] and b.task == ["go"]
    assert b.image_is_pad("wrist").all()


def test_the_model_and_policy_name_a_misspelled_key(tmp_path):
    """Old dict inputs still work at the edges; a misspelled one fails there, naming the key."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _export_tiny import tiny_config, write_tiny_checkpoint
    from vlastack.models.vla import build_vla
    from vlastack.policy import Policy

    torch.manual_seed(0)
    model = build_vla(tiny_config("l1")).eval()
    good = {
        "observation.images.front": torch.rand(1, 1, 3, 16, 16),
        "observation.images.wrist": torch.rand(1, 1, 3, 16, 16),
        "observation.state": torch.randn(1, 1, 4),
    }
    assert model.sample_actions(dict(good)).shape == (1, 4, 4)  # a plain dict: accepted
    bad = {**good, "observaton.state": good["observation.state"]}
    with pytest.raises(BatchKeyError, match="'observaton.state'.*did you mean 'observation.state'"):
        model.sample_actions(bad)
    with pytest.raises(BatchKeyError, match="'actions'.*did you mean 'action'"):
        model.loss({**good, "actions": torch.zeros(1, 4, 4)})
    policy = Policy.from_checkpoint(write_tiny_checkpoint(tmp_path / "ck", "l1"))
    assert policy.predict({**good, "task": [""]}).shape == (1, 4, 4)
    with pytest.raises(BatchKeyError, match="'prompt'.*did you mean 'task'"):
        policy.predict({**good, "prompt": ["go"]})
