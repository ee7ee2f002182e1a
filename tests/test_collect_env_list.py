"""``vlastack collect --env A,B`` (issue 27.7): a comma list of envs and suites, as ``bench heads``
takes, expanded in order without duplicates; tasks of different simulators are refused."""

from __future__ import annotations

import pytest

from vlastack.errors import ConfigError


def test_env_list_expands_in_order_without_duplicates():
    pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")
    from vlastack.envs import list_tasks
    from vlastack.envs.collect import collect_tasks

    assert collect_tasks("metaworld/reach-v3,metaworld/push-v3") == [
        "metaworld/reach-v3",
        "metaworld/push-v3",
    ]
    mt10 = list_tasks("metaworld/mt10")
    assert collect_tasks(f"{mt10[1]}, metaworld/mt10") == [mt10[1]] + [
        t for t in mt10 if t != mt10[1]
    ]
    assert collect_tasks("metaworld/reach-v3") == ["metaworld/reach-v3"]
    with pytest.raises(ConfigError, match="one simulator"):
        collect_tasks("metaworld/reach-v3,pusht")
    with pytest.raises(ConfigError, match="empty"):
        collect_tasks("metaworld/reach-v3,")


def test_cli_collects_two_envs_into_one_dataset(tmp_path, capsys):
    pytest.importorskip("metaworld", reason="Meta-World is in the 'sim' extra")
    from vlastack.cli.main import main
    from vlastack.data.format import DatasetReader

    out = tmp_path / "ds"
    argv = ["collect", "--env", "metaworld/reach-v3,metaworld/button-press-v3", "--out", str(out)]
    assert main([*argv, "--episodes-per-task", "1", "--image-size", "32"]) == 0
    envs = sorted(e.extra["env"] for e in DatasetReader(out).episodes)
    assert envs == ["metaworld/button-press-v3", "metaworld/reach-v3"]
