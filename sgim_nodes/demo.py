"""``make-demo-models DIR``: tiny random-weight models in the real file formats, to try everything now.

Writes, laid out like a models folder (so ``SGIM_MODELS_DIR=DIR`` or ComfyUI's extra_model_paths.yaml
finds them under the names the commands and every example graph use):

    DIR/stylegan/landscape.pt                 64 px StyleGAN2, 10 W+ layers, rosinality checkpoint layout
    DIR/stylegan/ffhq.pkl                     64 px StyleGAN2 under the face example's name, saved in our
                                              safetensors format (the loaders read a file's format from its
                                              bytes, not its extension; the real file is an NVlabs pickle)
    DIR/stylegan/wikiart-1024-stylegan3-t-17.2Mimg.pkl
                                              32 px StyleGAN3-T, 8 W+ layers, under the name the painting
                                              and music-video examples use; our safetensors format too
    DIR/sgim_audio_encoders/resnet18_57.pth   ResNet-18 audio encoder, official state-dict layout, 32-d
    DIR/sgim_clip/ViT-B-32.pt                 tiny CLIP (32-d) as an OpenAI-layout state dict
    DIR/sgim_identity/model_ir_se50.pth       ArcFace IR-SE50 (its one fixed architecture), float16, 88 MB
    DIR/sgim_vgg/vgg16-397923af.pth           VGG16 convolutions in torchvision's layout, float16, 29 MB
    DIR/demo_sound.wav                        a 3 s synthetic sound

The weights are random: images are noise-like and sounds do not mean anything to the encoder. They
exercise every command and graph end to end (loading, embedding, optimising, projecting, saving,
training) in seconds on a CPU; they are not for results. The tests' model writers
(tests/integration/tiny_models.py) use the helpers below too.
"""

from __future__ import annotations

from pathlib import Path

EMBED_DIM = 32
SEED = 1234
FILES = {  # role: path inside DIR
    "generator": Path("stylegan/landscape.pt"),
    "face_generator": Path("stylegan/ffhq.pkl"),
    "painting_generator": Path("stylegan/wikiart-1024-stylegan3-t-17.2Mimg.pkl"),
    "encoder": Path("sgim_audio_encoders/resnet18_57.pth"),
    "clip": Path("sgim_clip/ViT-B-32.pt"),
    "identity": Path("sgim_identity/model_ir_se50.pth"),
    "vgg": Path("sgim_vgg/vgg16-397923af.pth"),
    "sound": Path("demo_sound.wav"),
}


def tiny_generator(resolution: int, dim: int, name: str, channels: int = 16, n_mapping: int = 2, seed: int = SEED):
    """A random StyleGAN2 with ``channels`` channels at every size from 4 px up, its w_avg estimated."""
    import torch

    from .stylegan import Generator, GeneratorConfig

    with torch.inference_mode(False):
        torch.manual_seed(seed)
        config = GeneratorConfig(resolution=resolution, z_dim=dim, w_dim=dim, n_mapping=n_mapping,
                                 channels={2 ** i: channels for i in range(2, resolution.bit_length())})
        generator = Generator(config, name=name)
        with torch.no_grad():
            generator.w_avg.copy_(generator.estimate_w_avg(256))
    return generator


def tiny_stylegan3(name: str, dim: int = EMBED_DIM, seed: int = SEED):
    """A random 32 px StyleGAN3-T (6 layers, 8 W+ rows), its w_avg estimated."""
    import torch

    from .stylegan import StyleGAN3Config, StyleGAN3Generator

    with torch.inference_mode(False):
        torch.manual_seed(seed)
        generator = StyleGAN3Generator(StyleGAN3Config(resolution=32, z_dim=dim, w_dim=dim, channel_base=512,
                                                       channel_max=32, num_layers=6), name=name)
        with torch.no_grad():
            generator.w_avg.copy_(generator.estimate_w_avg(256))
    return generator


def save_tiny_clip(path: str | Path, embed_dim: int = EMBED_DIM, seed: int = SEED) -> tuple[str, int]:
    """A tiny random CLIP saved in the OpenAI state-dict layout; returns (its model name, embed_dim)."""
    import torch

    from .clip import build_tiny_clip
    from .fileio import atomic_path

    model = build_tiny_clip(embed_dim=embed_dim, seed=seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # OpenAI's layout carries these three; with them the loader rebuilds the model from the weights alone.
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return f"openai:{Path(path).stem}", embed_dim


def save_random_identity(path: str | Path, config=None, seed: int = SEED) -> None:
    """A random IR-SE state dict (default: IR-SE50's one architecture, as the loader expects; float16
    halves the file and the loader reads it back into float32)."""
    import torch

    from .fileio import atomic_path
    from .optimize import IRSE50, IRSEBackbone

    with torch.inference_mode(False):
        torch.manual_seed(seed)
        half = config is None
        state = IRSEBackbone(config or IRSE50).state_dict()
        state = {k: v.half() if half and v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_random_vgg16(path: str | Path, seed: int = SEED) -> None:
    """Random VGG16 convolutions in torchvision's layout (``features.N.*``); its shapes are fixed, and
    float16 halves the file."""
    import torch

    from .fileio import atomic_path
    from .project.distance import VGG16Features

    with torch.inference_mode(False):
        torch.manual_seed(seed)
        state = {k: v.half() for k, v in VGG16Features().state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_demo_models(out_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write the files listed in the module docstring into ``out_dir``; ``{role: path}``.

    Refuses to replace an existing file unless ``overwrite`` (``DIR`` may be a folder with real models).
    """
    import numpy as np
    import torch

    from .audio import build_audio_encoder
    from .errors import ParameterError
    from .fileio import atomic_path
    from .stylegan import rosinality_checkpoint, save_generator
    from .train.synthetic import synthesize, write_wav

    out = Path(out_dir)
    paths = {role: out / rel for role, rel in FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ParameterError(f"{out}: would replace {', '.join(existing)}; choose an empty folder, or pass "
                             "--overwrite to replace them with random-weight demo models", parameter="out_dir")
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)

    with torch.inference_mode(False):
        # 64 px: the smallest size with rows in every layer preset (coarse, middle and fine)
        generator = tiny_generator(64, EMBED_DIM, "landscape")
        with atomic_path(paths["generator"]) as tmp:
            torch.save(rosinality_checkpoint(generator), tmp)
        save_generator(tiny_generator(64, EMBED_DIM, "ffhq", seed=SEED + 1), paths["face_generator"])
        save_generator(tiny_stylegan3("wikiart", seed=SEED + 2), paths["painting_generator"])
        save_tiny_clip(paths["clip"])
        torch.manual_seed(SEED)
        encoder = build_audio_encoder("resnet18", embed_dim=EMBED_DIM)
        with atomic_path(paths["encoder"]) as tmp:
            torch.save({k: v.detach().clone() for k, v in encoder.state_dict().items()}, tmp)
    save_random_identity(paths["identity"])
    save_random_vgg16(paths["vgg"])

    rate = 44100
    with atomic_path(paths["sound"]) as tmp:
        write_wav(Path(tmp), synthesize("harmonic buzz", np.random.default_rng(SEED), rate, 3.0), rate)
    return paths


def main(argv: list[str] | None = None) -> int:
    from .cli_help import command_parser
    from .models import launcher

    parser = command_parser("make-demo-models", __doc__, full_doc=True)
    parser.add_argument("out_dir", type=Path, help="folder to write the models into (e.g. demo-models)")
    parser.add_argument("--overwrite", action="store_true", help="replace files of the same names in the folder")
    args = parser.parse_args(argv)
    print(f"[sgim] writing tiny random-weight demo models into {args.out_dir}")
    paths = write_demo_models(args.out_dir, overwrite=args.overwrite)
    for role, path in paths.items():
        print(f"wrote {path}")
    run = launcher()
    clip = paths["clip"]
    print(f"""
Random weights: for trying commands and graphs end to end, not for results. Try:
  SGIM_MODELS_DIR={args.out_dir} {run} edit --audio {paths['sound']} --text "a rainy night" --out demo.png --steps 20
  {run} embed-audio {paths['sound']} --encoder {paths['encoder']}
  {run} make-synthetic-dataset data/synth --per-class 24 --seed 0
  {run} train --data data/synth --split train --clip {clip} --features compact --epochs 2 --batch-size 16 \\
      --out synth_encoder.safetensors
  {run} evaluate --encoder synth_encoder.safetensors --clip {clip} --data data/synth
ComfyUI: list the folder in extra_model_paths.yaml (see docs/nodes.md) or copy its sub-folders into
ComfyUI/models/; every example graph then runs on these files with any sound in Load Audio.""")
    return 0


if __name__ == "__main__":
    from .errors import run_command

    raise SystemExit(run_command(main))
