"""vlastack: build, train, benchmark and serve Vision-Language-Action robot policies.

The package is organised by the data path (see ARCHITECTURE.md): ``data`` (LeRobot v3 episodes),
``envs`` (simulators), ``models`` (vision → projector → language → action head), ``training``,
``evaluation``, ``serving`` and ``export``.
"""

__version__ = "0.1.0"
