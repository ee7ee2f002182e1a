"""vlastack.envs."""
