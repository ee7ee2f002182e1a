"""vlastack.data."""
