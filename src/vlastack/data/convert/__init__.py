"""vlastack.data.convert."""
