"""vlastack.export."""
