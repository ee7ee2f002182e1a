"""vlastack.envs.experts."""
