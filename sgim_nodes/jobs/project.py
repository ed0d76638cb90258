"""The bring-your-own-picture job: projection into W+ and pivotal tuning (Project Image, ``project``).

:func:`run_projection` is the one projection both front ends run; the command line
(:func:`run_project`) reads the pictures and models from files first and writes the code, the
rendered fit and, when the generator changed, its tuned copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ParameterError
from ..project.options import TUNE_LR
from .run import Run

NOISE_CHOICES = {"auto": None, "on": True, "off": False}
PHASE_NAMES = {"w": "projecting (W)", "wplus": "projecting (W+)", "tune": "tuning"}


def wplus_learning_rate(lr: float, wplus_lr: float | None = None) -> float:
    """The W+ phase's peak learning rate: half the W phase's unless given (NVlabs' 0.1 in W, 0.05 in W+)."""
    return lr / 2 if wplus_lr is None else wplus_lr


@dataclass
class ProjectRequest:
    """One projection: the generator, the picture(s) (PIL images, paths' contents or an IMAGE
    ``[B, H, W, C]`` in [0, 1]) and the mathematics; ``lpips``/``clip`` for those distances."""

    generator: object
    image: object
    distance: str = "lpips"
    lpips: object = None
    clip: object = None
    steps: int = 1000
    space: str = "wplus"
    w_fraction: float = 0.5
    lr: float = 0.1
    wplus_lr: float | None = None  # None: half of lr
    pixel_weight: float = 0.0
    optimize_noise: str = "auto"  # auto (only when tuning), on, off
    fit: str = "crop"
    tune_steps: int = 0
    tune_lr: float = TUNE_LR
    seed: int = 0
    preview_every: int = 0


@dataclass
class ProjectOutcome:
    result: object  # project.ProjectResult
    history: list[dict] = field(default_factory=list)  # per step: {"phase", "loss"}
    tuned: bool = False

    def report(self) -> dict:
        result = self.result
        return {"psnr_db": result.psnr, "psnr_db_before_tuning": result.psnr_before_tuning,
                "tuned": self.tuned,
                "history": self.history}


def check_request(request: ProjectRequest) -> None:
    """What the request lacks, before any work: the distance's network, a known noise choice, the bounds."""
    from ..options import PROJECT_FIELDS, check_fields

    check_fields(request, PROJECT_FIELDS)
    if request.distance == "lpips" and request.lpips is None:
        raise ParameterError("lpips: the 'lpips' distance needs the LPIPS VGG16 network (vgg16-397923af.pth in "
                             "models/sgim_vgg; in ComfyUI connect Load VGG16 (LPIPS)), or choose 'pixel', "
                             "'multiscale' or 'clip'", parameter="lpips")
    if request.distance == "clip" and request.clip is None:
        raise ParameterError("clip: the 'clip' distance needs a CLIP model (in ComfyUI connect Load CLIP)",
                             parameter="clip")
    if request.optimize_noise not in NOISE_CHOICES:
        raise ParameterError(f"optimize_noise: expected one of {list(NOISE_CHOICES)}, got {request.optimize_noise!r}",
                             parameter="optimize_noise")


def run_projection(request: ProjectRequest, run: Run) -> ProjectOutcome:
    from ..project.projector import project_image

    check_request(request)
    total = request.steps + request.tune_steps
    history: list[dict] = []

    def on_step(info):
        run.check_cancel()
        new_phase = not history or history[-1]["phase"] != info.phase
        history.append({"phase": info.phase, "loss": info.loss})
        run.progress(info.step, total, preview=info.preview, terms={f"{info.phase} loss": info.loss},
                     text=PHASE_NAMES[info.phase] if new_phase else None)

    image = request.image.clone() if isinstance(request.image, torch.Tensor) else request.image
    with torch.inference_mode(False), torch.enable_grad(), run.cpu_memory():
        result = project_image(
            request.generator, image, distance=request.distance, lpips=request.lpips, clip=request.clip,
            steps=request.steps, space=request.space, w_fraction=request.w_fraction, lr=request.lr,
            wplus_lr=wplus_learning_rate(request.lr, request.wplus_lr), pixel_weight=request.pixel_weight,
            optimize_noise=NOISE_CHOICES[request.optimize_noise], fit=request.fit, tune_steps=request.tune_steps,
            tune_lr=request.tune_lr, seed=request.seed, callback=on_step, preview_every=request.preview_every,
            reuse_cpu_memory=False)
    return ProjectOutcome(result, history, request.tune_steps > 0)


# --- the command line's projection: files in, files out --------------------------------------

@dataclass
class ProjectFilesRequest:
    images: list  # picture files, or PIL images already read
    out: Path
    generator: Path
    vgg: Path | None = None
    clip: Path | None = None
    clip_model: str | None = None
    projection: ProjectRequest | None = None  # the mathematics (its generator, image and networks are filled in)
    tuned_generator: Path | None = None
    device: str = "auto"


@dataclass
class ProjectFilesOutcome:
    result: object
    written: list[Path]
    generator_resolution: int
    tuned: bool


def read_pictures(paths: list[Path]):
    """The pictures to project, each bounded by its header before decoding (``sgim_nodes.pictures``)."""
    from ..pictures import read_picture

    return [read_picture(path, "IMAGE") for path in paths]


def output_paths(out: Path, pictures: int, writes_generator: bool, tuned_generator: Path | None = None
                 ) -> dict[str, list[Path]]:
    """Every file :func:`run_project` writes, by the flag that names it: the code, its rendering(s) (one per
    picture of a batch, as :func:`~sgim_nodes.pipeline.save_images` names them) and the generator copy."""
    out = Path(out)
    stem = out.with_suffix("")
    picture = stem.with_name(stem.name + "_projection.png")
    pictures_out = [picture] if pictures == 1 else [picture.with_name(f"{picture.stem}_{i}{picture.suffix}")
                                                    for i in range(pictures)]
    paths = {"--out": [out, *pictures_out]}
    if writes_generator:
        flag = "--tuned-generator" if tuned_generator is not None else "--out"
        paths.setdefault(flag, []).append(Path(tuned_generator or stem.with_name(stem.name + "_generator.safetensors")))
    return paths


def check_outputs(out: Path, pictures: int, writes_generator: bool, tuned_generator: Path | None = None,
                  overwrite: bool = False) -> None:
    """Before any work: every output can be written, and none replaces an existing file unless ``overwrite``."""
    from ..fileio import check_output_file

    for flag, paths in output_paths(out, pictures, writes_generator, tuned_generator).items():
        for path in paths:
            check_output_file(path, flag, create_folders=False, overwrite=overwrite)


def run_project(request: ProjectFilesRequest, run: Run) -> ProjectFilesOutcome:
    """Write the W+ code ``out``, ``<out>_projection.png`` and, when the generator changed, its copy."""
    from dataclasses import replace

    from ..latents import save_wplus
    from ..pipeline import save_images
    from ..project.distance import load_lpips
    from ..stylegan import load_generator, save_generator

    out = Path(request.out)
    if out.suffix != ".safetensors":
        raise ParameterError(f"--out: expected a .safetensors file name, got {out}", parameter="out")
    pictures = [p for p in request.images if not isinstance(p, (str, Path))]
    pictures += read_pictures([p for p in request.images if isinstance(p, (str, Path))])
    math = request.projection or ProjectRequest(None, None)
    generator = load_generator(request.generator, device=run.device)
    lpips = load_lpips(request.vgg, device=run.device) if math.distance == "lpips" else None
    clip = None
    if math.distance == "clip":
        from ..clip import load_clip

        clip = load_clip(request.clip, model_name=request.clip_model, device=run.device)
    outcome = run_projection(replace(math, generator=generator, image=pictures, lpips=lpips, clip=clip), run)
    result = outcome.result
    stem = out.with_suffix("")
    written = []
    generator_name = generator.name
    if result.generator is not None:
        generator_out = output_paths(out, 1, True, request.tuned_generator)["--tuned-generator" if
                                                                             request.tuned_generator else "--out"][-1]
        save_generator(result.generator, generator_out)
        written.append(generator_out)
        generator_name = generator_out.stem  # the name the loaders give that file
    save_wplus(out, result.ws, generator_name)
    written.append(out)
    written += save_images(result.images, stem.with_name(stem.name + "_projection.png"))
    return ProjectFilesOutcome(result, written, generator.resolution, math.tune_steps > 0)
