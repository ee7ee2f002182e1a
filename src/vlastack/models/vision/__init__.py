"""vlastack.models.vision."""
