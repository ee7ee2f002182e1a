"""vlastack.recipes."""
