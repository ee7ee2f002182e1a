"""LeRobot 0.6.1 ``pretrained_model`` folders as vlastack policies (ACT, Diffusion Policy, SmolVLA).

One file per idea: ``folder`` reads the folder (config.json, processor JSON, stats) and
recognises it without torch; ``normalize`` is the normalizer/unnormalizer step math;
``weights`` the strict state-dict loading; ``resnet`` the torchvision-layout ResNet backbone;
``act`` and ``diffusion`` the networks with LeRobot's state-dict keys (``diffusion`` also the
DDPM sampler); ``policy`` (ACT) and ``diffusion_policy`` the ``infer``/``reset``/``metadata``
objects and loaders, registered as the ``lerobot_act`` / ``lerobot_diffusion`` checkpoint
formats in ``vlastack.policy_formats``. ``observation`` finds inputs under every client
spelling and builds ``metadata["embodiment"]``; ``describe`` is what ``vlastack inspect`` prints;
``hub`` resolves ``lerobot/xxx`` ids from the local Hugging Face cache; ``legacy`` reads LeRobot
< 0.4 folders (stats as buffers in model.safetensors); ``write`` writes a loaded (possibly
fine-tuned) ACT / Diffusion / SmolVLA policy back as a LeRobot ``pretrained_model`` folder
(``vlastack export lerobot``). SmolVLA: ``smolvlm`` (the SmolVLM vision tower, connector and
text layers from transformers' modules, and where the VLM config comes from), ``smolvla`` (the
VLM + action-expert interleaved attention and the projections), ``flow`` (time embedding,
attention-mask rule, Euler sampler), ``tokenizer`` (local-only tokenizer loading and the
fixtures' byte-level stand-in), ``smolvla_policy`` (the ``lerobot_smolvla`` format). Only
``folder`` (and the torch-free ``legacy``/``hub``) is imported by that registration; the torch
modules load when a checkpoint does.

pi0 / pi0.5 (``lerobot_pi0`` / ``lerobot_pi05``): ``gemma`` (PiGemma decoder layers, adaRMS,
RoPE, the Gemma size table), ``paligemma`` (SigLIP via transformers + projector + Gemma and the
action expert, LeRobot's key layout), ``flow`` (shared with SmolVLA),
``pi0`` (prefix/suffix attention and ``sample_actions``), ``pi0_inputs`` (prompts, tokenizers,
resize-with-pad), ``pi0_weights`` (strict loading, unused keys), ``pi0_policy`` (the policy and
loader); ``openpi_folder`` / ``openpi_pi0``: openpi's PyTorch checkpoints (``openpi_pi0``) on
the same modules.

X-VLA (``lerobot_xvla``): ``xvla`` (the soft-prompted, domain-aware transformer and the
action spaces), ``xvla_model`` (Florence-2 from transformers' ``Florence2Model`` without its
decoder, the encoder pass and the sampler), ``xvla_inputs`` (spec, processor steps: image to
float, ImageNet normalization, domain id), ``xvla_weights`` (strict loading, the tied BART
embedding, the remote-code Florence-2 layout), ``xvla_policy`` (the policy and loader).

Shared by all: ``session`` (one client's noise generator, Diffusion history and ACT ensembler:
``policy.new_session()``, one per server connection) and ``guided`` (real-time chunking's
committed actions laid out for the flow VLAs' ``infer_guided``; the math is
``functional.rtc``).
"""
