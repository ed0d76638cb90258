"""``python -m sgim_nodes edit``: the main job from a terminal, the same pipeline the nodes wire up.

    sound (and/or text) --> CLIP-space target(s) --> optimise W+ --> source.png, edited.png, W+ codes

Targets: every ``--audio`` file and every ``--text`` prompt becomes one target; with several, the
optimiser pulls toward their weighted combination (``--weights``, default equal), which is the paper's
audio+text mixing in the embedding space. (Layer-wise mixing of two edits is the Style Mix node, or
:func:`sgim_nodes.latents.style_mix` from Python.)

Model files default to the pack's ``models/`` folders (see ``python -m sgim_nodes download --list``);
when one is missing the command stops before doing any work and says which file to get and how.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ParameterError
from .models import KNOWN_MODELS, find_model_file, models_dir

DEFAULT_FILES = {  # argument -> (folder, default registry model)
    "generator": ("stylegan", "landscape"),
    "encoder": ("sgim_audio_encoders", "audio-encoder"),
    "clip": ("sgim_clip", "clip-vit-b-32"),
    "identity": ("sgim_identity", "ir-se50"),
}


@dataclass
class EditRequest:
    """Everything one edit needs; the command line fills it, Python callers may build it directly."""

    out: Path
    generator: Path
    clip: Path
    encoder: Path | None = None
    identity: Path | None = None
    audio: list[Path] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    clip_model: str | None = None
    preset: str = "landscape"
    steps: int | None = None
    lr: float | None = None
    lambda_sim: float | None = None
    lambda_id: float | None = None
    truncation: float | None = None
    mask: str | None = None
    adaptive_mask: bool = False
    source_latent: Path | None = None
    mode: str = "edit"
    seed: int = 0
    batch: int = 1
    hop_seconds: float | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None
    device: str = "auto"
    lean_memory: bool = False  # CPU: give freed activations back every step (lower peak, slower)


def _parser() -> argparse.ArgumentParser:
    from .optimize import PRESETS

    p = argparse.ArgumentParser(prog="python -m sgim_nodes edit", description=__doc__.split("\n\n")[0],
                                epilog="Model files: python -m sgim_nodes download --list")
    p.add_argument("--audio", type=Path, action="append", default=[], help="sound file (repeatable)")
    p.add_argument("--text", action="append", default=[], help="text prompt (repeatable)")
    p.add_argument("--weights", help="comma-separated weights of the targets, audio first then text")
    p.add_argument("--out", type=Path, required=True, help="edited image (PNG); source and W+ files go beside it")
    p.add_argument("--generator", help="StyleGAN2/StyleGAN3 file (.pt/.pkl/.safetensors) or a name in models/stylegan")
    p.add_argument("--encoder", help="audio encoder (.pth/.safetensors) or a name in models/sgim_audio_encoders")
    p.add_argument("--clip", help="CLIP model (OpenAI .pt, open_clip .bin/.safetensors) or a name in models/sgim_clip")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--identity", help="ArcFace IR-SE50 file (needed when --lambda-id > 0)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="landscape",
                   help="the paper's released settings; the options below override single values")
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lambda-sim", type=float, help="weight of the latent-similarity term")
    p.add_argument("--lambda-id", type=float, help="weight of the identity term (faces)")
    p.add_argument("--truncation", type=float, help="truncation of the random source code")
    p.add_argument("--mask", help="layer mask: a preset (all, coarse, middle, fine) or per-layer weights 'w0,w1,...'")
    p.add_argument("--adaptive-mask", action="store_true", help="the released code's adaptive layer masking")
    p.add_argument("--source-latent", type=Path, help="W+ file to edit (default: a random code from --seed)")
    p.add_argument("--mode", choices=["edit", "generate"], default="edit",
                   help="edit a source code, or generate freely from the mean latent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1, help="number of random source codes edited together")
    p.add_argument("--hop", dest="hop_seconds", type=float, help="window hop in seconds for long audio")
    p.add_argument("--start", dest="start_seconds", type=float, help="use the audio from this second")
    p.add_argument("--end", dest="end_seconds", type=float, help="use the audio up to this second")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--lean-memory", action="store_true",
                   help="CPU: return freed memory to the system every step (about 10%% lower peak at 1024 px, "
                        "but page faults make each step up to 2x slower; see README, Measured figures)")
    return p


def _missing_message(missing: list[tuple[str, str]]) -> str:
    lines = ["these model files are needed and were not found:"]
    for arg, default_name in missing:
        model = KNOWN_MODELS[default_name]
        lines.append(f"  --{arg}: {model.description}")
        lines.append(f"      expected at {model.default_path} (or pass --{arg} PATH)")
        lines.append(f"      get it with: python -m sgim_nodes download {model.name}"
                     + ("" if model.url else "   (explains the manual download)"))
    lines.append(f"models folder: {models_dir()} (env SGIM_MODELS_DIR)")
    return "\n".join(lines)


def request_from_args(args: argparse.Namespace) -> EditRequest:
    if not args.audio and not args.text and args.mode == "edit":
        raise ParameterError("give at least one --audio FILE or --text PROMPT to steer the edit")
    if not args.audio and not args.text:
        raise ParameterError("generate mode needs at least one --audio FILE or --text PROMPT")
    needed = ["generator", "clip"] + (["encoder"] if args.audio else [])
    if (args.lambda_id or 0) > 0 or (args.preset == "face" and args.lambda_id is None):
        needed.append("identity")
    paths, missing = {}, []
    for arg in needed:
        folder, default_name = DEFAULT_FILES[arg]
        given = getattr(args, arg)
        found = find_model_file(folder, given, KNOWN_MODELS[default_name].filename)
        if found is None:
            if given:
                raise ParameterError(f"--{arg}: file not found: {given}")
            missing.append((arg, default_name))
        paths[arg] = found
    if missing:
        raise ParameterError(_missing_message(missing))
    weights = None
    if args.weights:
        try:
            weights = [float(v) for v in args.weights.split(",")]
        except ValueError:
            raise ParameterError(f"--weights: expected comma-separated numbers, got {args.weights!r}") from None
    return EditRequest(out=args.out, audio=list(args.audio), text=list(args.text), weights=weights,
                       clip_model=args.clip_model, preset=args.preset, steps=args.steps, lr=args.lr,
                       lambda_sim=args.lambda_sim, lambda_id=args.lambda_id, truncation=args.truncation,
                       mask=args.mask, adaptive_mask=args.adaptive_mask, source_latent=args.source_latent,
                       mode=args.mode, seed=args.seed, batch=args.batch, hop_seconds=args.hop_seconds,
                       start_seconds=args.start_seconds, end_seconds=args.end_seconds, device=args.device,
                       lean_memory=args.lean_memory, **paths)


def _layer_weights(spec: str | None):
    if spec is None:
        return None
    if "," in spec or spec.replace(".", "", 1).isdigit():
        try:
            return [float(v) for v in spec.split(",")]
        except ValueError:
            raise ParameterError(f"--mask: expected a preset name or comma-separated weights, got {spec!r}") from None
    return spec


def build_targets(request: EditRequest, clip, device) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Embed every audio file and prompt: ``([1, K, D] targets, [K] weights or None, labels)``."""
    from .audio import check_compatible, embed_audio, load_audio, load_audio_encoder

    vectors, labels = [], []
    if request.audio:
        encoder = load_audio_encoder(request.encoder, device=device)
        check_compatible(encoder, clip)
        for path in request.audio:
            waveform, rate = load_audio(path)
            vectors.append(embed_audio(encoder, waveform, rate, hop_seconds=request.hop_seconds,
                                       start_seconds=request.start_seconds, end_seconds=request.end_seconds)[0])
            labels.append(f"audio:{Path(path).name}")
    if request.text:
        vectors.extend(clip.encode_text(request.text))
        labels.extend(f"text:{t}" for t in request.text)
    weights = None
    if request.weights is not None:
        if len(request.weights) != len(vectors):
            raise ParameterError(f"--weights: got {len(request.weights)} weights for {len(vectors)} targets "
                                 f"({', '.join(labels)})")
        weights = torch.tensor(request.weights, dtype=torch.float32)
    targets = torch.stack([v.to(device).float() for v in vectors])[None]  # [1, K, D]
    return targets, weights, labels


def run_edit(request: EditRequest, progress: bool = True):
    """Run one edit and write ``<out>``, ``<out>_source.png`` and ``<out>_wplus.safetensors``."""
    from tqdm import tqdm

    from .clip import load_clip
    from .device import resolve_device
    from .latents import check_wplus_fits, load_wplus, save_wplus
    from .optimize import PRESETS, load_id_model, optimize_latent
    from .stylegan import load_generator

    device = resolve_device(request.device)
    settings = dict(PRESETS[request.preset])
    for key in ("steps", "lr", "lambda_sim", "lambda_id", "truncation"):
        if getattr(request, key) is not None:
            settings[key] = getattr(request, key)
    generator = load_generator(request.generator, device=device)
    clip = load_clip(request.clip, model_name=request.clip_model, device=device)
    targets, weights, labels = build_targets(request, clip, device)
    if request.mode == "generate":
        source = None
    elif request.source_latent is not None:
        ws, _, _ = load_wplus(request.source_latent)
        source = check_wplus_fits(ws, generator, "--source-latent").to(device)
    else:
        from .optimize import sample_source_ws

        source = sample_source_ws(generator, request.batch, request.seed, settings["truncation"])
    if source is not None and source.shape[0] > 1:
        targets = targets.expand(source.shape[0], -1, -1)
    id_model = None
    if settings["lambda_id"] > 0 and request.mode == "edit":
        if request.identity is None:
            raise ParameterError("--identity: lambda_id > 0 needs the ArcFace IR-SE50 file "
                                 "(python -m sgim_nodes download ir-se50), or pass --lambda-id 0")
        id_model = load_id_model(request.identity, device=device)

    bar = tqdm(total=settings["steps"], desc="optimising", unit="step", disable=not progress)

    def on_step(info):
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in info.losses.items() if k != "total"})

    try:
        result = optimize_latent(generator, clip, targets, source_ws=source, steps=settings["steps"],
                                 lr=settings["lr"], lambda_sim=settings["lambda_sim"],
                                 lambda_id=settings["lambda_id"], layer_weights=_layer_weights(request.mask),
                                 adaptive_mask=request.adaptive_mask, id_model=id_model, seed=request.seed,
                                 callback=on_step, target_weights=weights, truncation=settings["truncation"],
                                 reuse_cpu_memory=not request.lean_memory)
    finally:
        bar.close()

    with torch.no_grad():
        source_images = generator.synthesis(result.source_ws, noise_mode="const")
    out = Path(request.out)
    stem = out.with_suffix("")
    written = [*save_images(result.images, out), *save_images(source_images, stem.with_name(stem.name + "_source.png"))]
    latent_path = stem.with_name(stem.name + "_wplus.safetensors")
    save_wplus(latent_path, result.ws, generator.name, source_ws=result.source_ws)
    written.append(latent_path)
    return result, labels, written


def save_images(images: torch.Tensor, path: Path) -> list[Path]:
    """Save generator output ``[B, 3, H, W]`` in [-1, 1] as PNG(s): ``path``, or ``path_<i>`` for a batch."""
    import numpy as np
    from PIL import Image

    from .fileio import atomic_path

    path = Path(path)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    paths = [path] if pixels.shape[0] == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}")
                                                  for i in range(pixels.shape[0])]
    for image, target in zip(pixels, paths):
        with atomic_path(target) as tmp:
            Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(tmp, format="PNG")
    return paths


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    request = request_from_args(args)
    result, labels, written = run_edit(request)
    clip_start = result.history["clip"][0].mean().item()
    clip_end = result.history["clip"][-1].mean().item()
    print(f"targets: {', '.join(labels)}")
    print(f"CLIP cosine distance to the target: {clip_start:.4f} -> {clip_end:.4f}")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from .errors import run_command

    raise SystemExit(run_command(main))
