import pytest

from vlastack.errors import ConfigError
from vlastack.registry import Registry


def test_registry_did_you_mean():
    reg: Registry[int] = Registry("action head")
    reg.add("flow_matching", 1, "flow")
    reg.add("diffusion", 2, "ddpm")
    assert reg.get("diffusion") == 2
    with pytest.raises(ConfigError, match="Did you mean 'flow_matching'"):
        reg.get("flow_matchng")
    with pytest.raises(ValueError):
        reg.add("diffusion", 3)
    assert list(reg) == ["diffusion", "flow_matching"]
