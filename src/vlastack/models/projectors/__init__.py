"""vlastack.models.projectors."""
