"""vlastack.models."""
