"""Plugins (``vlastack.plugins``): modules named by VLASTACK_PLUGINS or a ``vlastack.plugins``
entry point register envs, suites and checkpoint formats that every registry read sees; a
plugin that cannot be imported is a clear ConfigError; the product holds no test scaffolding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from vlastack import plugins
from vlastack.envs import ENVS, SUITES, difficulty_of, list_tasks, make_env
from vlastack.errors import ConfigError, VlastackError
from vlastack.evaluation.rollout import difficulty, load_policy, resolve_tasks
from vlastack.policy_formats import POLICY_FORMATS, detect_policy_format
from vlastack_test_plugins import fakes

SRC = Path(__file__).resolve().parents[1] / "src" / "vlastack"


@pytest.fixture(autouse=True)
def _registries_as_they_were():
    """What a test's plugin registers is gone after it: later tests (``vlastack list``'s
    descriptions, the env names it prints) see the registries as the session left them."""
    import vlastack.envs as envs_pkg
    from vlastack.policy_formats import POLICY_FORMATS

    saved = [
        (d, dict(d))
        for d in (ENVS._entries, POLICY_FORMATS._entries, envs_pkg._SUITES, envs_pkg._DIFFICULTY)
    ]
    yield
    for d, before in saved:
        d.clear()
        d.update(before)


def _plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """Write a uniquely named plugin module under tmp_path, importable; return its name."""
    name = f"vlastack_tmp_plugin_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body).replace("NAME", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _add_to_env_var(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    old = os.environ.get(plugins.ENV_VAR, "")
    monkeypatch.setenv(plugins.ENV_VAR, f"{old},{name}" if old else name)


ENV_PLUGIN = """
    import functools

    from vlastack.envs import ENVS, list_tasks, register_env, register_suite
    from vlastack_test_plugins import fakes

    # a plugin may read the registries while it is imported: plugin loading is not re-entered
    # (it would import this half-imported module again), nothing recurses or deadlocks
    from vlastack import plugins

    before = plugins.loaded_plugins()
    assert "metaworld/reach-v3" in ENVS and list_tasks("metaworld/mt10")
    assert plugins.loaded_plugins() == before, "plugin loading re-entered"
    for task in ("a", "b"):
        register_env(
            f"NAME/{task}",
            functools.partial(fakes.FakeReachEnv, "fake/reach-easy"),
            "a plugin env",
            difficulty="plugin-" + task,
        )
    register_suite("NAME/all", ["NAME/a", "NAME/b"])
"""


def test_an_env_var_plugin_registers_envs_suites_and_difficulties(tmp_path, monkeypatch, capsys):
    name = _plugin_module(tmp_path, monkeypatch, ENV_PLUGIN)
    _add_to_env_var(monkeypatch, name)
    assert name not in sys.modules  # imported on the first registry read, not before
    assert f"{name}/a" in ENVS
    assert name in sys.modules and name in plugins.loaded_plugins()
    assert list_tasks(f"{name}/all") == [f"{name}/a", f"{name}/b"]
    assert SUITES[f"{name}/all"] == [f"{name}/a", f"{name}/b"]
    assert resolve_tasks(f"{name}/all") == [f"{name}/a", f"{name}/b"]
    assert difficulty_of(f"{name}/b") == "plugin-b"
    assert difficulty(f"{name}/all", f"{name}/a") == "plugin-a"
    assert make_env(f"{name}/a", image_size=(8, 8)).task_name == "fake/reach-easy"
    with pytest.raises(ConfigError, match="is a suite of 2 tasks"):
        make_env(f"{name}/all")
    # the CLI lists it like any built-in env
    from vlastack.cli.main import main

    assert main(["list", "envs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["envs"]
    assert listed[f"{name}/a"] == "a plugin env" and "metaworld/reach-v3" in listed
    # built-in behaviour is unchanged
    assert difficulty_of("drawer-open-v3") == "easy"
    with pytest.raises(ConfigError, match="not a Meta-World v3 task"):
        difficulty_of("pusht")


def test_an_entry_point_plugin_is_loaded(tmp_path, monkeypatch):
    name = _plugin_module(
        tmp_path,
        monkeypatch,
        """
        from vlastack.envs import register_env
        from vlastack_test_plugins import fakes

        register_env(
            "NAME/ep", lambda **kw: fakes.FakeReachEnv("fake/reach-far", **kw), "an entry-point env"
        )
        """,
    )
    ep = EntryPoint(name="tmp", value=name, group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [ep])
    monkeypatch.setattr(plugins, "_entry_points_done", False)
    assert f"{name}/ep" in list(ENVS)
    assert "entry point tmp" in plugins.loaded_plugins()


def test_a_plugin_that_cannot_be_imported_is_a_clear_config_error(tmp_path, monkeypatch, capsys):
    _add_to_env_var(monkeypatch, "vlastack_no_such_plugin_xyz")
    with pytest.raises(ConfigError) as exc:
        ENVS.get("metaworld/reach-v3")
    msg = str(exc.value)
    assert "'vlastack_no_such_plugin_xyz'" in msg and "VLASTACK_PLUGINS" in msg
    assert "PYTHONPATH" in msg and "remove it from VLASTACK_PLUGINS" in msg
    with pytest.raises(ConfigError, match="vlastack_no_such_plugin_xyz"):  # every read, again
        list_tasks("metaworld/mt10")
    from vlastack.cli.main import main

    assert main(["list", "envs"]) == 2
    err = capsys.readouterr().err
    assert "vlastack_no_such_plugin_xyz" in err and "Traceback" not in err
    # a plugin that raises while imported names itself and the error
    broken = _plugin_module(tmp_path, monkeypatch, "raise RuntimeError('boom in NAME')\n")
    monkeypatch.setenv(plugins.ENV_VAR, broken)
    with pytest.raises(ConfigError, match=f"{broken}.*RuntimeError: boom in {broken}.*Fix that"):
        "x" in ENVS  # noqa: B015
    # an entry point that fails names the entry point and its group
    monkeypatch.setenv(plugins.ENV_VAR, "")
    bad = EntryPoint(name="bad", value="vlastack_no_such_ep_xyz", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [bad])
    monkeypatch.setattr(plugins, "_entry_points_done", False)
    with pytest.raises(ConfigError, match="entry point 'bad'.*'vlastack.plugins'"):
        ENVS.entries()


def test_subprocesses_see_the_tests_plugin():
    """conftest.py exports VLASTACK_PLUGINS and PYTHONPATH, so CLI subprocesses and worker
    processes register the fake envs too (spawned eval workers: test_eval_rollout)."""
    code = (
        "from vlastack.envs import ENVS, list_tasks; "
        "print('fake/reach-easy' in ENVS, len(list_tasks('fake/suite')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["True", "3"]


FORMAT_PLUGIN = """
    from vlastack.policy_formats import register_policy_format


    class Loaded:
        def __init__(self, path, kw):
            self.path, self.kw = path, kw

        def reset(self):
            pass

        def infer(self, obs):
            return {}


    register_policy_format(
        "NAME",
        lambda p: (p / "NAME.json").exists(),
        lambda p, **kw: Loaded(p, kw),
        "a plugin checkpoint format",
    )
"""


def test_a_plugin_checkpoint_format_is_used_by_load_policy(tmp_path, monkeypatch):
    name = _plugin_module(tmp_path, monkeypatch, FORMAT_PLUGIN)
    _add_to_env_var(monkeypatch, name)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / f"{name}.json").write_text("{}")
    assert name in POLICY_FORMATS
    policy = load_policy(ck, embodiment="arm")
    assert type(policy).__name__ == "Loaded" and policy.path == ck
    assert policy.kw == {"expect_embodiment": None, "embodiment": "arm"}
    # a folder no format claims is a native checkpoint: the native loader explains what is wrong
    (ck / f"{name}.json").unlink()
    assert detect_policy_format(ck) is None
    with pytest.raises(VlastackError):
        load_policy(ck)
    # the tests' scripted policy arrives through the same seam
    fake = fakes.write_fake_checkpoint(tmp_path / "fake", action_horizon=3)
    assert detect_policy_format(fake).name == "fake_scripted"
    assert isinstance(load_policy(fake), fakes.ScriptedReachPolicy)
    with pytest.raises(ConfigError, match="drop --embodiment"):
        load_policy(fake, embodiment="arm")
    # two formats claiming one folder: a ConfigError naming both
    (fake / f"{name}.json").write_text("{}")
    with pytest.raises(
        ConfigError, match=f"several checkpoint formats \\(fake_scripted, {name}\\)"
    ):
        load_policy(fake)


def test_no_test_scaffolding_in_the_product():
    banned = (
        "fake_policy",
        "VLASTACK_FAKE_CRASH",
        "VLASTACK_COLLECT_CRASH_AT",
        "vlastack_test_plugins",
        "evaluation.fakes",
        "evaluation import fakes",
        "ScriptedReachPolicy",
        '"fake/',
    )
    found = [
        f"{p.relative_to(SRC)}: {word}"
        for p in sorted(SRC.rglob("*"))
        if p.is_file() and p.suffix in (".py", ".c", ".md", ".json", ".toml", ".txt")
        for word in banned
        if word in p.read_text(errors="replace")
    ]
    assert found == []
    assert not (SRC / "evaluation" / "fakes.py").exists()
