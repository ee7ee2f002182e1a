"""vlastack.serving."""
