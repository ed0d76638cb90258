"""Tiny random-weight model files in the real formats, laid out like ComfyUI's ``models/`` folder.

Used by the node unit tests and the real-server integration tests (which copy them into a
temporary ComfyUI base directory). Also runnable by hand:

    python tests/integration/tiny_models.py OUT_MODELS_DIR

Files written (folder keys are the pack's folder_paths keys):

    stylegan/tiny_rosinality.pt            32 px, 8 W+ layers, rosinality checkpoint layout
    stylegan/tiny16.safetensors            16 px, 6 W+ layers, our safetensors (for mismatch tests)
    stylegan/nvlabs_tiny.pkl               32 px NVlabs snapshot (copied from the shared fixtures, if present)
    stylegan/tf_conditional_tiny.pkl       32 px TensorFlow StyleGAN2, 5 classes (LabelConcat; shared fixture, if present)
    stylegan/tiny_sg3.pkl                  32 px NVlabs StyleGAN3-T snapshot, 8 W+ layers (the shared fixture
                                           sg3t_tiny.pkl; without the fixtures a random StyleGAN3-T in our
                                           format, tiny_sg3.safetensors)
    sgim_audio_encoders/tiny_encoder.safetensors   ResNet-18 audio encoder, embed_dim = the tiny CLIP's
    sgim_audio_encoders/wide_encoder.safetensors   same with a different width (CLIP mismatch tests)
    sgim_clip/tiny_clip.pt                 tiny CLIP as an OpenAI-layout state dict (loads without a name)
    sgim_identity/tiny_ir_se.pth           IR-SE state dict (tiny config)
    stylegan/not_a_model.pt                a PNG header renamed .pt (bad-file tests)
    sgim_vgg/tiny_vgg16.pth                random VGG16 in torchvision's layout (features.N.*), float16 (29 MB)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY_SEED = 1234


def _tiny_generator(resolution: int, dim: int, name: str):
    from sgim_nodes.demo import tiny_generator

    return tiny_generator(resolution, dim, name, seed=TINY_SEED)


def _tiny_stylegan3():
    from sgim_nodes.demo import tiny_stylegan3

    return tiny_stylegan3("tiny_sg3", dim=64, seed=TINY_SEED)


def save_tiny_clip(path: Path, embed_dim: int = 32) -> tuple[str, int]:
    """A tiny random CLIP saved in the OpenAI state-dict layout (with input_resolution/context_length/
    vocab_size), which load_clip rebuilds without a registered model name, in any process."""
    from sgim_nodes.demo import save_tiny_clip as save

    return save(path, embed_dim=embed_dim, seed=TINY_SEED)


def write_tiny_models(models_dir: str | Path, shared_dir: str | Path | None = None) -> dict[str, str]:
    """Write the files listed in the module docstring; returns {role: file name inside its folder}."""
    from sgim_nodes.audio import build_audio_encoder, save_audio_encoder
    from sgim_nodes.demo import save_random_identity, save_random_vgg16
    from sgim_nodes.optimize import TINY_IRSE
    from sgim_nodes.stylegan import rosinality_checkpoint, save_generator

    models = Path(models_dir)
    for key in ("stylegan", "sgim_audio_encoders", "sgim_clip", "sgim_identity", "sgim_vgg"):
        (models / key).mkdir(parents=True, exist_ok=True)

    fixture = Path(shared_dir) / "fixtures" / "stylegan2" / "rosinality_tiny.pt" if shared_dir else None
    if fixture is not None and fixture.is_file():
        shutil.copyfile(fixture, models / "stylegan" / "tiny_rosinality.pt")
    else:
        torch.save(rosinality_checkpoint(_tiny_generator(32, 64, "tiny_rosinality")),
                   models / "stylegan" / "tiny_rosinality.pt")
    nvlabs = Path(shared_dir) / "fixtures" / "stylegan2" / "nvlabs_tiny.pkl" if shared_dir else None
    if nvlabs is not None and nvlabs.is_file():  # NVlabs snapshot pickle (source text stripped)
        shutil.copyfile(nvlabs, models / "stylegan" / "nvlabs_tiny.pkl")
    conditional = Path(shared_dir) / "fixtures" / "stylegan_more" / "tf_sg2_labelconcat_tiny.pkl" if shared_dir else None
    if conditional is not None and conditional.is_file():  # TensorFlow pickle of a conditional generator
        shutil.copyfile(conditional, models / "stylegan" / "tf_conditional_tiny.pkl")
    save_generator(_tiny_generator(16, 32, "tiny16"), models / "stylegan" / "tiny16.safetensors")
    sg3 = Path(shared_dir) / "fixtures" / "stylegan_more" / "sg3t_tiny.pkl" if shared_dir else None
    if sg3 is not None and sg3.is_file():
        sg3_name = "tiny_sg3.pkl"
        shutil.copyfile(sg3, models / "stylegan" / sg3_name)
    else:
        sg3_name = "tiny_sg3.safetensors"
        save_generator(_tiny_stylegan3(), models / "stylegan" / sg3_name)
    (models / "stylegan" / "not_a_model.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))

    clip_name, embed_dim = save_tiny_clip(models / "sgim_clip" / "tiny_clip.pt")
    torch.manual_seed(TINY_SEED)
    save_audio_encoder(build_audio_encoder("resnet18", embed_dim=embed_dim, clip_model=clip_name),
                       models / "sgim_audio_encoders" / "tiny_encoder.safetensors")
    save_audio_encoder(build_audio_encoder("resnet18", embed_dim=embed_dim + 8, clip_model="other"),
                       models / "sgim_audio_encoders" / "wide_encoder.safetensors")

    save_random_identity(models / "sgim_identity" / "tiny_ir_se.pth", TINY_IRSE, seed=TINY_SEED)
    save_random_vgg16(models / "sgim_vgg" / "tiny_vgg16.pth", seed=TINY_SEED)
    return {"vgg": "tiny_vgg16.pth", "generator": "tiny_rosinality.pt", "generator16": "tiny16.safetensors",
            "bad_generator": "not_a_model.pt", "generator_sg3": sg3_name,
            "encoder": "tiny_encoder.safetensors", "wide_encoder": "wide_encoder.safetensors",
            "clip": "tiny_clip.pt", "clip_model_name": clip_name, "identity": "tiny_ir_se.pth"}


if __name__ == "__main__":
    print(write_tiny_models(sys.argv[1], REPO.parent / "shared"))
