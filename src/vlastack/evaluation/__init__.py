"""vlastack.evaluation."""
