"""LeRobot 0.6.1 ``pretrained_model`` folders as vlastack policies.

One file per idea: ``folder`` reads the folder (config.json, processor JSON, stats) and
recognises it without torch; ``normalize`` is the normalizer/unnormalizer step math;
``resnet`` the torchvision-layout ResNet backbone with frozen batch norm; ``act`` the ACT
network with LeRobot's state-dict keys; ``policy`` the ``infer``/``reset``/``metadata`` object
and the loader registered as the ``lerobot_act`` checkpoint format. Only ``folder`` is imported
by the format registration; the torch modules load when a checkpoint does.
"""
