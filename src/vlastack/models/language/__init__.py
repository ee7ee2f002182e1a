"""vlastack.models.language."""
