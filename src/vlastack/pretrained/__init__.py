"""Checkpoints trained by other frameworks, loaded as vlastack policies.

``vlastack.pretrained.lerobot`` reads LeRobot ``pretrained_model`` folders (ACT so far). The
loaders register themselves as checkpoint formats in ``vlastack.policy_formats``, so
``evaluation.rollout.load_policy(folder)``, ``vlastack eval`` and the server accept such a folder
as they accept a native checkpoint. Importing this package imports no torch code.
"""
