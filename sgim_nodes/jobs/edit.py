"""The edit job: optimise W+ codes toward CLIP-space targets (Optimize Latent, ``edit``).

:func:`run_latent_edit` is the one optimisation both front ends run: the node hands it the models
and values of its inputs, the command line (:func:`run_edit`) first loads files and embeds the sounds
and prompts, then writes images and codes. :func:`source_codes` is the rule for the codes an edit
starts from, :func:`decode_codes` the chunked render of codes into images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import NonFiniteError, ParameterError
from ..optimize.targets import Embedding, mix_targets, single_embedding
from .run import Run

DECODE_CHUNK = 4  # codes rendered at once by decode_codes: bounded memory at 1024 px


@dataclass
class LatentEdit:
    """One optimisation: models, targets ``[B, K, D]`` with relative weights, and the mathematics."""

    generator: object
    clip: object
    targets: torch.Tensor
    source_ws: torch.Tensor | None  # None: generate from the mean latent
    target_weights: list[float] | torch.Tensor | None = None
    steps: int = 300
    lr: float = 0.1
    lambda_sim: float = 0.002
    lambda_id: float = 0.0
    layer_weights: object = None  # a LayerMask (rules.freedom_mask / LayerFreedom.layer_mask) or None
    adaptive_mask: bool = False
    id_model: object = None
    seed: int = 0
    truncation: float = 0.7
    preview_every: int = 0
    init_ws: torch.Tensor | None = None  # where the optimisation starts (e.g. an instant edit); None: the source


@dataclass
class LatentEditResult:
    result: object  # optimize.OptimizeResult
    losses: list[dict[str, float]]  # per step: the batch sums of the loss terms (StepInfo.losses)


def run_latent_edit(request: LatentEdit, run: Run) -> LatentEditResult:
    """Optimise; progress, previews and loss terms go to ``run``, which may cancel between steps."""
    from ..optimize import optimize_latent
    from ..options import EDIT_FIELDS, check_fields

    check_fields(request, EDIT_FIELDS)  # the bounds the command line and the nodes share

    device = next(iter(request.generator.parameters())).device
    losses: list[dict[str, float]] = []

    def on_step(info):
        run.check_cancel()
        losses.append({k: float(v) for k, v in info.losses.items()})
        terms = {k: sum(v) / len(v) for k, v in info.per_sample.items()}  # per edit: a batch is averaged
        run.progress(info.step, info.total, preview=info.preview, terms=terms)

    source = None if request.source_ws is None else request.source_ws.detach().clone().to(device)
    targets = request.targets.detach().clone().to(device)
    if source is not None and source.shape[0] > 1 and targets.shape[0] == 1:
        targets = targets.expand(source.shape[0], -1, -1)
    weights = request.target_weights
    with torch.inference_mode(False), torch.enable_grad(), run.cpu_memory():
        result = optimize_latent(
            request.generator, request.clip, targets, source_ws=source,
            target_weights=None if weights is None else list(weights) if isinstance(weights, tuple) else weights,
            steps=request.steps, lr=request.lr, lambda_sim=request.lambda_sim, lambda_id=request.lambda_id,
            layer_weights=request.layer_weights, adaptive_mask=request.adaptive_mask, id_model=request.id_model,
            seed=request.seed, truncation=request.truncation, callback=on_step,
            preview_every=request.preview_every, reuse_cpu_memory=False,
            init_ws=None if request.init_ws is None else request.init_ws.detach().clone().to(device))
    return LatentEditResult(result, losses)


def source_codes(generator, mode: str = "random", batch: int = 1, seed: int = 0, truncation: float = 0.7,
                 label=None, label_parameter: str = "class") -> torch.Tensor:
    """The codes an edit starts from: ``random`` (z from the seed, truncated; a class for conditional
    generators) or ``mean`` (the generator's single average latent, for conditional ones too)."""
    from ..optimize import sample_source_ws

    if mode == "mean":
        if label not in (None, -1, ""):
            raise ParameterError(f"{label_parameter}: a class is only used in 'random' mode (the mean latent has "
                                 "no class)", parameter=label_parameter)
        return generator.w_avg[None, None].expand(batch, generator.num_ws, -1)
    if mode != "random":
        raise ParameterError(f"mode: expected 'random' or 'mean', got {mode!r}", parameter="mode")
    return sample_source_ws(generator, batch, seed, truncation=truncation, labels=label, labels_name=label_parameter)


def decode_codes(generator, ws: torch.Tensor, run: Run, noise_mode: str = "const") -> torch.Tensor:
    """Render codes ``[B, num_ws, w_dim]`` in chunks (bounded memory); NaN pixels are refused."""
    device = next(iter(generator.parameters())).device
    images = []
    with torch.no_grad():
        for chunk in ws.split(DECODE_CHUNK):
            run.check_cancel()
            rendered = generator.synthesis(chunk.to(device), noise_mode=noise_mode)
            if not bool(torch.isfinite(rendered).all()):
                raise NonFiniteError("ws: the generator rendered NaN or infinite pixels from this code (a float16 "
                                     "generator overflowing, or a damaged code)", parameter="ws")
            images.append(rendered)
    return torch.cat(images)


IMAGE_COMBINES = ("each", "mean")


def embed_image(clip, image: torch.Tensor, combine: str = "each") -> torch.Tensor:
    """CLIP embeddings of an IMAGE batch ``[B, H, W, C]`` in [0, 1] (alpha dropped): one per image
    (``combine="each"``, ``[B, D]``), or their mean direction (``"mean"``, ``[1, D]``, unit length: one
    target for a whole batch such as a video's frames, as Embed Audio pools its windows)."""
    if combine not in IMAGE_COMBINES:
        raise ParameterError(f"combine: expected one of {list(IMAGE_COMBINES)}, got {combine!r}", parameter="combine")
    if image.dim() != 4 or image.shape[-1] not in (3, 4) or 0 in image.shape:
        raise ParameterError(f"images: expected a non-empty IMAGE [B, H, W, 3], got {list(image.shape)}",
                             parameter="images")
    if not bool(torch.isfinite(image).all()):
        raise ParameterError("images: the image contains NaN or infinite values", parameter="images")
    with torch.no_grad():
        vectors = clip.encode_image(image[..., :3])
    return vectors if combine == "each" else torch.nn.functional.normalize(vectors.mean(0, keepdim=True), dim=-1)


# --- the command line's edit: files in, files out ----------------------------------------------

@dataclass
class EditRequest:
    """Everything one edit from files needs; the command line fills it, Python callers may build it."""

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
    seed: int | None = None  # None: 0 where a seed matters (see optimize.rules)
    batch: int = 1
    class_label: str | int | None = None  # conditional generators: class index or name of the random source
    hop_seconds: float | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None
    device: str = "auto"
    lean_memory: bool = False  # CPU: give freed activations back every step (lower peak, slower)
    # instant edits (sgim_nodes.instant): instead of the optimiser, or as its starting point (init="instant")
    instant: bool = False
    init: str = "source"  # "source" or "instant": where the optimiser starts
    alpha: float | None = None  # None: sgim_nodes.instant.edit.DEFAULT_ALPHA
    beta: float | None = None
    reference: str = "source"
    neutral: str | None = None  # a neutral prompt (reference "neutral")
    space: str = "wplus"
    analysis_cache: Path | None = None
    analysis_samples: int | None = None


@dataclass
class EditOutcome:
    result: object  # the OptimizeResult
    labels: list[str]
    written: list[Path]
    clip_before: float  # CLIP cosine distance to the target, mean per edit: the source images
    clip_after: float  # the same for the images written


def build_targets(request: EditRequest, clip, run: Run) -> Embedding:
    """Embed every audio file and prompt of the request and mix them (relative ``weights``, default equal)."""
    from ..audio import check_compatible, embed_audio, load_audio, load_audio_encoder

    parts = []
    if request.audio:
        run.status(f"loading audio encoder {Path(request.encoder).name}")
        encoder = load_audio_encoder(request.encoder, device=run.device)
        check_compatible(encoder, clip)
        for path in request.audio:
            waveform, rate = load_audio(path)
            vector = embed_audio(encoder, waveform, rate, hop_seconds=request.hop_seconds,
                                 start_seconds=request.start_seconds, end_seconds=request.end_seconds)[:1]
            parts.append(single_embedding(vector, f"audio:{Path(path).name}"))
    for prompt in request.text:  # one at a time, as Embed Text does: a batch may round differently
        parts.append(single_embedding(clip.encode_text([prompt]), f"text:{prompt}"))
    weights = request.weights if request.weights is not None else [1.0] * len(parts)
    if len(weights) != len(parts):
        raise ParameterError(f"weights: got {len(weights)} weights for {len(parts)} targets (audio first, then "
                             "text)", parameter="weights")
    return mix_targets([("weights", e, w) for e, w in zip(parts, weights)], parameter="weights")


def run_edit(request: EditRequest, run: Run) -> EditOutcome:
    """One edit from files: writes ``<out>``, ``<out>_source<ext>`` and ``<out>_wplus.safetensors``."""
    from ..clip import load_clip
    from ..latents import check_wplus_fits, load_wplus
    from ..models import launcher
    from ..optimize import load_id_model
    from ..optimize.objective import combine_targets, cosine_distance
    from ..optimize.rules import check_source_options, freedom_mask, parse_freedom
    from ..presets import PRESETS
    from ..stylegan import load_generator
    from ..stylegan.labels import class_labels

    from ..options import EDIT_FIELDS, check_fields

    check_fields(request, EDIT_FIELDS)  # before any model is loaded
    check_source_options(request.mode, batch=request.batch, seed_given=request.seed is not None,
                         source_given=request.source_latent is not None, class_given=request.class_label is not None)
    seed = 0 if request.seed is None else request.seed
    device = run.device
    settings = dict(PRESETS[request.preset])
    for key in ("steps", "lr", "lambda_sim", "lambda_id", "truncation"):
        if getattr(request, key) is not None:
            settings[key] = getattr(request, key)
    run.status(f"loading generator {Path(request.generator).name} on {device}")
    generator = load_generator(request.generator, device=device)
    if request.class_label is not None:  # a wrong class stops here, before any audio or CLIP work
        class_labels(generator, request.class_label, request.batch, name="--class")
    mask = None if request.mask is None else freedom_mask(
        parse_freedom(request.mask, int(generator.num_ws), "--mask", getattr(generator, "ws_resolutions", None)))
    run.status(f"loading CLIP {Path(request.clip).name}")
    clip = load_clip(request.clip, model_name=request.clip_model, device=device)
    target = build_targets(request, clip, run)
    if request.mode == "generate":
        source = None
    elif request.source_latent is not None:
        ws, _, _ = load_wplus(request.source_latent)
        source = check_wplus_fits(ws, generator, "--source-latent").to(device)
    else:
        source = source_codes(generator, "random", request.batch, seed, settings["truncation"],
                              label=request.class_label, label_parameter="--class")
    id_model = None
    if settings["lambda_id"] > 0 and request.mode == "edit":
        if request.identity is None:
            raise ParameterError(f"--identity: lambda_id > 0 needs the ArcFace IR-SE50 file "
                                 f"({launcher()} download ir-se50), or pass --lambda-id 0")
        run.status(f"loading identity model {Path(request.identity).name}")
        id_model = load_id_model(request.identity, device=device)

    init_ws = directions = None
    if request.instant or request.init == "instant":
        directions = _instant_directions(request, generator, clip, run)
    if request.instant:
        instant = _instant_edit(request, generator, clip, directions, target, source, run)
        return _write_edit(request, generator, instant.result, instant.images, source, target,
                           instant.distance_before.mean().item(), instant.distance_after.mean().item())
    if request.init == "instant":
        init_ws = _instant_warm_start(request, generator, clip, directions, target, source, settings, run)

    run.status("optimising (the first step also warms up, it takes longest)")
    edit = LatentEdit(generator, clip, target.vectors, source, target_weights=list(target.weights),
                      steps=settings["steps"], lr=settings["lr"], lambda_sim=settings["lambda_sim"],
                      lambda_id=settings["lambda_id"], layer_weights=mask, adaptive_mask=request.adaptive_mask,
                      id_model=id_model, seed=seed, truncation=settings["truncation"], init_ws=init_ws)
    result = run_latent_edit(edit, run).result

    with torch.no_grad():
        # "after" is measured on the images written, not on the last step's codes before its update.
        targets = target.vectors.to(device).expand(result.ws.shape[0], -1, -1)
        vector, offset = combine_targets(targets, list(target.weights), embed_dim=int(clip.embed_dim))
        clip_after = cosine_distance(clip.image_features(result.images), vector, offset).mean().item()
        clip_before = result.history["clip"][0].mean().item()  # step 1 renders the source ...
        if init_ws is not None:  # ... unless it started elsewhere
            source_features = clip.image_features(generator.synthesis(result.source_ws, noise_mode="const"))
            clip_before = cosine_distance(source_features, vector, offset).mean().item()
    return _write_edit(request, generator, result, result.images, result.source_ws, target, clip_before, clip_after)


def _write_edit(request: EditRequest, generator, result, images, source_ws, target, clip_before, clip_after
                ) -> EditOutcome:
    """Writes ``<out>``, ``<out>_source<ext>`` and ``<out>_wplus.safetensors`` (codes: ``result.ws``)."""
    from ..latents import save_wplus
    from ..pipeline import save_images

    with torch.no_grad():
        source_images = generator.synthesis(source_ws.expand_as(result.ws), noise_mode="const")
    out = Path(request.out)
    stem = out.with_suffix("")
    written = [*save_images(images, out),
               *save_images(source_images, stem.with_name(stem.name + "_source" + out.suffix))]
    latent_path = stem.with_name(stem.name + "_wplus.safetensors")
    save_wplus(latent_path, result.ws, generator.name, source_ws=source_ws.expand_as(result.ws))
    written.append(latent_path)
    return EditOutcome(result, list(target.labels), written, clip_before=clip_before, clip_after=clip_after)


def _instant_directions(request: EditRequest, generator, clip, run: Run):
    """The generator's analysed directions, from the cache (analysed and cached on first use)."""
    from ..instant import AnalysisSettings, cached_directions

    settings = None if request.analysis_samples is None else AnalysisSettings(samples=request.analysis_samples)
    directions, hit = cached_directions(generator, clip, generator_file=request.generator,
                                        cache=request.analysis_cache, settings=settings, run=run)
    if not hit:
        from ..instant import analysis_cost

        run.status(f"analysed for instant edits: {analysis_cost(directions)}")
    return directions


def _freedom(request: EditRequest, generator):
    from ..optimize.rules import parse_freedom

    if request.mask is None:
        return None
    return parse_freedom(request.mask, int(generator.num_ws), "--mask", getattr(generator, "ws_resolutions", None))


def _instant_options(request: EditRequest, clip) -> dict:
    from ..instant.edit import DEFAULT_ALPHA, DEFAULT_BETA

    neutral = None
    if request.neutral is not None:
        neutral = clip.encode_text([request.neutral])
    return {"alpha": DEFAULT_ALPHA if request.alpha is None else request.alpha,
            "beta": DEFAULT_BETA if request.beta is None else request.beta,
            "reference": "neutral" if request.neutral is not None else request.reference, "neutral": neutral}


def _instant_edit(request: EditRequest, generator, clip, directions, target, source, run: Run):
    from .instant import InstantEditRequest, run_instant_edit

    run.status("instant edit")
    return run_instant_edit(InstantEditRequest(
        generator, clip, target.vectors, source, target_weights=list(target.weights),
        layer_freedom=_freedom(request, generator), space=request.space, directions=directions,
        **_instant_options(request, clip)), run)


def _instant_warm_start(request: EditRequest, generator, clip, directions, target, source, settings, run: Run):
    from .instant import WarmStartRequest, run_warm_start

    options = _instant_options(request, clip)
    if options["reference"] != "source":
        raise ParameterError("--init instant: the warm start measures from the source image itself; leave "
                             "--reference and --neutral out", parameter="init")
    init, _ = run_warm_start(WarmStartRequest(
        generator, clip, target.vectors, source, target_weights=list(target.weights),
        lambda_sim=settings["lambda_sim"], layer_freedom=_freedom(request, generator), beta=options["beta"],
        space=request.space, directions=directions), run)
    return init
