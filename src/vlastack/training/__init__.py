"""vlastack.training."""
