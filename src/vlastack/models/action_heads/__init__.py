"""vlastack.models.action_heads."""
