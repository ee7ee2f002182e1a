"""vlastack.functional."""
