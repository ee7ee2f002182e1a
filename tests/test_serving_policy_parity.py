"""A real VLA checkpoint served over the wire gives exactly the in-process Policy's actions."""

from __future__ import annotations

import numpy as np
import pytest

from _export_tiny import tiny_obs, write_tiny_checkpoint
from vlastack.policy import Policy

pytest.importorskip("websockets")


@pytest.mark.parametrize("head", ["flow_matching", "l1"])
def test_served_equals_in_process(tmp_path, head):
    from vlastack.serving.client import PolicyClient, ServerError
    from vlastack.serving.server import ServerThread

    ckpt = write_tiny_checkpoint(tmp_path / "ckpt", head=head)
    local = Policy.from_checkpoint(ckpt, seed=3)
    served = Policy.from_checkpoint(ckpt, seed=3)
    obs = tiny_obs(1)
    expected = local.infer(obs)["actions"]
    with ServerThread(served, port=0) as srv:
        client = PolicyClient("127.0.0.1", srv.port)
        meta = client.metadata
        assert meta["action_horizon"] == expected.shape[0]
        got = client.infer(obs)
        np.testing.assert_array_equal(got["actions"], expected)
        assert "server_timing" in got and "policy_timing" in got
        # a malformed observation gets a short error, and the connection keeps working
        bad = dict(obs)
        bad["observation.state"] = np.zeros(7, np.float32)
        with pytest.raises(ServerError, match="expected 4"):
            client.infer(bad)
        again = client.infer(obs)
        assert again["actions"].shape == expected.shape
        client.close()
