"""The X-VLA key mapping: every key of the fixture's model.safetensors loads into vlastack's
network with its shape, the one state-dict key the file lacks (BART's ``shared`` embedding,
tied to ``encoder.embed_tokens``) is filled from its alias, a file that does not fit its
config.json is an error naming the key and the fix, and a file in the remote-code Florence-2
layout (older X-VLA checkpoints) loads to the same actions. No full-size listing exists for
X-VLA (README "Not produced": LeRobot 0.6.1 has no default Florence-2 architecture)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import _lerobot_golden as G
from _lerobot_golden import max_abs
from _lerobot_python import lerobot_python
from vlastack.errors import ConfigError
from vlastack.pretrained.lerobot.tokenizer import ByteTokenizer
from vlastack.pretrained.lerobot.xvla_inputs import XVLASpec
from vlastack.pretrained.lerobot.xvla_policy import build_xvla, load_lerobot_xvla
from vlastack.pretrained.lerobot.xvla_weights import EMBED, SHARED, file_names, is_vendored

PROJ = "model.vlm.multi_modal_projector.image_projection.weight"


@pytest.fixture(autouse=True)
def _one_thread():
    """The goldens' thread count; also keeps these tiny models from oversubscribing a busy
    2-core box (two threads made each chunk ~100x slower there; conftest restores it)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def kind_dir(fixtures_dir: Path) -> Path:
    return G.policy_dir(fixtures_dir, "xvla")


@pytest.fixture(scope="module")
def file_shapes(kind_dir: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(kind_dir / "pretrained_model" / "model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def test_every_file_key_is_a_network_key_of_the_same_shape(kind_dir, file_shapes):
    cfg = json.loads((kind_dir / "pretrained_model" / "config.json").read_text())
    build, _ = build_xvla(cfg, XVLASpec.from_config(cfg))
    with torch.device("meta"):
        net = build()
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    names = file_names(file_shapes)
    assert len(file_shapes) == 222 and sorted(names.values()) == sorted(file_shapes)
    for key, file_key in names.items():
        assert want[key] == file_shapes[file_key], key
    # the only state-dict key missing from the file, as golden.json records it
    missing = sorted(set(want) - set(names))
    meta = json.loads((kind_dir / "golden.json").read_text())["checkpoint"]
    assert missing == meta["state_dict_keys_not_in_file"] == [SHARED]
    assert len(want) == meta["state_dict_keys"] == 223
    assert want[SHARED] == file_shapes[EMBED] == (1024, 32)


def test_shared_embedding_comes_from_the_encoders_and_is_read(kind_dir):
    pol = load_lerobot_xvla(kind_dir / "pretrained_model", device="cpu", tokenizer=ByteTokenizer())
    sd = load_file(str(kind_dir / "pretrained_model" / "model.safetensors"))
    lm = pol.network.model.vlm.language_model
    assert torch.equal(lm.shared.weight, sd[EMBED])
    assert torch.equal(lm.encoder.embed_tokens.weight, sd[EMBED])
    # X-VLA embeds the text with get_input_embeddings(), i.e. `shared`
    assert pol.network.model.vlm.get_input_embeddings() is lm.shared


def _rewrite(kind_dir: Path, dst: Path, change) -> Path:
    shutil.copytree(kind_dir / "pretrained_model", dst)
    sd = load_file(str(dst / "model.safetensors"))
    change(sd)
    save_file(sd, str(dst / "model.safetensors"))
    return dst


def test_a_resized_tensor_is_named_with_the_fields_to_check(kind_dir, tmp_path):
    key = "model.transformer.soft_prompt_hub.weight"

    def resize(sd):
        sd[key] = torch.zeros(5, sd[key].shape[1])

    folder = _rewrite(kind_dir, tmp_path / "resized", resize)
    with pytest.raises(ConfigError) as err:
        load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
    msg = str(err.value)
    assert f"{key} is (5, 128) in the file, the config gives (4, 128)" in msg
    assert "num_domains" in msg and "same LeRobot checkpoint" in msg


def test_missing_and_extra_keys_are_named(kind_dir, tmp_path):
    gone = "model.vlm.vision_tower.convs.0.conv.weight"

    def change(sd):
        del sd[gone]
        sd["model.transformer.extra.weight"] = torch.zeros(2)

    folder = _rewrite(kind_dir, tmp_path / "keys", change)
    with pytest.raises(ConfigError) as err:
        load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())
    msg = str(err.value)
    assert f"missing from the file: {gone}" in msg
    assert "not in the network the config builds: model.transformer.extra.weight" in msg


def test_a_config_that_builds_another_network_is_refused(kind_dir, tmp_path):
    folder = tmp_path / "deeper"
    shutil.copytree(kind_dir / "pretrained_model", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["depth"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"missing from the file: model\.transformer\.blocks\.2"):
        load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"type": "smolvla"}, r"'type' is 'smolvla', not 'xvla'"),
        ({"florence_config": {}}, r"'florence_config' must hold 'vision_config' and 'text_config'"),
        ({"action_mode": "quaternion"}, r"'action_mode' 'quaternion' is not an X-VLA action space"),
        ({"dtype": "float16"}, r"'dtype' 'float16'"),
    ],
)
def test_bad_config_fields_are_named(kind_dir, tmp_path, change, match):
    folder = tmp_path / "bad"
    shutil.copytree(kind_dir / "pretrained_model", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(change)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=match):
        load_lerobot_xvla(folder, device="cpu", tokenizer=ByteTokenizer())


# ---- the remote-code (Microsoft) Florence-2 layout of older X-VLA checkpoints ---------------
_BLOCK = r"(model\.vlm\.vision_tower\.blocks\.\d+\.\d+\.)(spatial_block|channel_block)\."


def to_remote_code_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixture's state dict as the remote-code Florence-2 modules name it: ConvEmbed
    ``proj``, the blocks' PreNorm (``fn`` + ``norm``) / depthwise ``dw`` / Mlp ``net`` wrappers,
    the projector pieces on the model itself, ``image_projection`` an (in, out) matrix, BART
    under ``language_model.model`` with a ``final_logits_bias``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        k = re.sub(r"(vision_tower\.convs\.\d+\.)conv\.", r"\1proj.", key)
        m = re.match(_BLOCK + r"(.*)$", k)
        if m:
            head, kind, rest = m.group(1), m.group(2), m.group(3)
            attn = "window_attn" if kind == "spatial_block" else "channel_attn"
            for old, new in (
                ("conv1.", "conv1.fn.dw."),
                ("conv2.", "conv2.fn.dw."),
                ("norm1.", f"{attn}.norm."),
                (f"{attn}.", f"{attn}.fn."),
                ("norm2.", "ffn.norm."),
                ("ffn.", "ffn.fn.net."),
            ):
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            k = f"{head}{kind}.{rest}"
        if k == PROJ:
            out["model.vlm.image_projection"] = value.t().contiguous()
            continue
        k = k.replace(
            "model.vlm.multi_modal_projector.image_position_embed.", "model.vlm.image_pos_embed."
        )
        k = k.replace("model.vlm.multi_modal_projector.", "model.vlm.")
        k = k.replace("model.vlm.language_model.", "model.vlm.language_model.model.")
        out[k] = value
    out["model.vlm.language_model.final_logits_bias"] = torch.zeros(1, 1024)
    return out


@pytest.fixture(scope="module")
def remote_code_folder(kind_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("xvla_remote") / "pretrained_model"
    shutil.copytree(kind_dir / "pretrained_model", folder)
    sd = load_file(str(folder / "model.safetensors"))
    save_file(to_remote_code_layout(sd), str(folder / "model.safetensors"))
    return folder


def test_remote_code_layout_loads_to_the_same_actions(kind_dir, remote_code_folder):
    torch.set_num_threads(1)
    with safe_open(str(remote_code_folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118
    assert is_vendored(keys) and not any("multi_modal_projector" in k for k in keys)
    golden = G.golden(kind_dir)
    pre = {
        k[len("obs0.preprocessed.") :]: v
        for k, v in golden.items()
        if k.startswith("obs0.preprocessed.")
    }
    pol = load_lerobot_xvla(remote_code_folder, device="cpu", tokenizer=ByteTokenizer())
    out = pol.predict_normalized(pre, noise=golden["obs0.noise"])
    assert (
        max_abs(out, golden["obs0.action_chunk_normalized"])
        <= G.tolerance(kind_dir)["action_chunk_normalized"]
    )


@pytest.mark.slow  # starts LeRobot 0.6.1 in a subprocess (importing it takes ~10-60 s here)
def test_lerobots_own_remap_agrees_on_the_remote_code_names(remote_code_folder, tmp_path):
    """LeRobot 0.6.1's ``_remap_vendored_florence_state_dict`` renames the test's remote-code
    file to exactly the names (and the transposed projection) vlastack reads it as."""
    py = lerobot_python()
    script = (
        "import sys, json\n"
        "from safetensors.torch import load_file\n"
        "from lerobot.policies.xvla.modeling_xvla import _remap_vendored_florence_state_dict as r\n"
        "sd = r(load_file(sys.argv[1]))\n"
        "json.dump({k: list(v.shape) for k, v in sd.items()}, open(sys.argv[2], 'w'))\n"
    )
    out = tmp_path / "remapped.json"
    proc = subprocess.run(
        [py, "-c", script, str(remote_code_folder / "model.safetensors"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(out.read_text())
    with safe_open(str(remote_code_folder / "model.safetensors"), "pt") as f:
        ours = file_names(f.keys())  # noqa: SIM118
        shapes = {k: list(f.get_slice(n).get_shape()) for k, n in ours.items()}
    shapes[PROJ] = shapes[PROJ][::-1]
    assert shapes == theirs


def test_remote_code_florence_config_is_translated(kind_dir):
    """The Florence-2 config as older X-VLA checkpoints store it (remote-code field names)
    gives the same architecture as the fixture's native one."""
    from vlastack.pretrained.lerobot.xvla_model import florence_config

    cfg = json.loads((kind_dir / "pretrained_model" / "config.json").read_text())
    native = florence_config(cfg)
    vision = dict(cfg["florence_config"]["vision_config"])
    vision.update(
        model_type="davit",
        dim_embed=vision.pop("embed_dim"),
        image_pos_embed={
            "type": "learned_abs_2d",
            "max_pos_embeddings": vision.pop("max_position_embeddings"),
        },
        visual_temporal_embedding={
            "type": "COSINE",
            "max_temporal_embeddings": vision.pop("max_temporal_embeddings"),
        },
        image_feature_source=["spatial_avg_pool", "temporal_avg_pool"],
        enable_checkpoint=False,
    )
    text = {**cfg["florence_config"]["text_config"], "model_type": "florence2_language"}
    remote = {**cfg["florence_config"], "vision_config": vision, "text_config": text}
    translated = florence_config({"florence_config": remote})
    assert translated.vision_config.to_dict() == native.vision_config.to_dict()
    assert translated.text_config.to_dict() == native.text_config.to_dict()
    bad = {**remote, "vision_config": {**vision, "image_feature_source": ["last_frame"]}}
    with pytest.raises(ConfigError, match=r"image_feature_source \['last_frame'\]"):
        florence_config({"florence_config": bad})
