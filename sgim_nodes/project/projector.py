"""Projection of a picture into a generator's W+, then optional pivotal tuning of a copy of the generator.

The recipe is NVlabs' projector (stylegan2-ada-pytorch ``projector.py``), extended to W+:

1. **W phase** (``w_fraction`` of the steps): one w per picture, starting at the generator's ``w_avg``;
   Adam (betas 0.9/0.999) with the learning rate ramped up over the first 5 % and down with a half
   cosine over the last 25 %; Gaussian jitter of w, ``w_std * 0.05`` fading out quadratically over the
   first 75 %, so the fit does not settle in the first basin it finds (``w_std`` is measured from
   10 000 mapped z, as there).
2. **W+ phase** (the rest, ``space="wplus"``): every layer's code is freed from the W result, same schedule
   at ``wplus_lr``. Real pictures are rarely in W; W+ reaches them, and starting it from W keeps the
   code near the region the generator was trained on, where sound edits behave.
3. **Noise** (StyleGAN2 only; StyleGAN3 has no noise inputs): with ``optimize_noise`` the per-layer
   noise maps are optimised too, from N(0, 1), renormalised to zero mean and unit variance after
   every step and penalised for spatial autocorrelation at every scale (weight ``noise_weight``,
   1e5 as NVlabs), so they cannot learn the picture itself. One set of maps is shared by a batch.
   The maps are a property of the generator, not of the W+ code, so they are only kept where a
   generator is returned: ``optimize_noise=None`` (default) optimises them when tuning (the tuned
   copy stores them) and otherwise keeps the generator's own noise, so the code alone, rendered by
   the original generator, reproduces the fit.
4. **Pivotal tuning** (``tune_steps`` > 0; Roich et al. 2021, "PTI"): a COPY of the generator's
   synthesis weights is fine-tuned with Adam (lr 3e-4, the paper's) so that the pivot code renders
   the picture closely; the distance plus ``tune_pixel_weight`` x MSE (PTI: LPIPS + L2). The caller's
   generator is never modified. Edits of real pictures look right only after this step: W+ codes of
   real pictures lie off the generator's manifold and sound edits of them drift.

The batch sums the per-picture losses, so each picture's code follows the trajectory it would follow
alone (Adam is element-wise), except for the W jitter's random draws, the shared noise maps and the
one tuned generator.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..memory import reuse_freed_memory
from ..limits import MAX_SEED, MAX_STEPS, check_int, check_weight
from ..optimize.loop import lr_schedule
from .distance import Distance, LPIPSVGG
from .image import prepare_target

from .options import SPACES, TUNE_LR  # noqa: F401  (re-exported)
W_STD_SAMPLES = 10_000  # NVlabs' w_avg_samples
W_JITTER = 0.05  # initial_noise_factor
W_JITTER_RAMP = 0.75  # noise_ramp_length
NOISE_WEIGHT = 1e5  # regularize_noise_weight


@dataclass
class ProjectStep:
    """What the callback receives after each step. ``phase``: "w", "wplus" or "tune"; ``step`` counts
    all phases together (1-based) up to ``total``; ``distance``: per picture; ``preview``: the render at
    this step every ``preview_every`` steps and at each phase's last step, else None."""

    phase: str
    step: int
    total: int
    lr: float
    loss: float
    distance: list[float]
    preview: torch.Tensor | None = None


@dataclass
class ProjectResult:
    """``ws`` [B, num_ws, w_dim]; ``images`` the final renders (with ``generator``); ``targets`` the
    prepared pictures, both [B, 3, R, R] in [-1, 1]; ``psnr`` per picture in dB (images clamped to
    [-1, 1], 8-bit range), after projection and, when tuned, after tuning; ``generator``: the copy to
    render ``ws`` with (tuned and/or with the fitted noise maps), or None when the caller's generator
    already renders the fit; ``history``: per phase, the loss of every step."""

    ws: torch.Tensor
    images: torch.Tensor
    targets: torch.Tensor
    psnr: list[float]
    psnr_before_tuning: list[float]
    generator: object | None = None
    noise_maps: list[torch.Tensor] | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


def psnr(images: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """PSNR in dB per image of two [B, 3, H, W] batches in [-1, 1] (peak = the full range)."""
    mse = ((images.detach().float().clamp(-1, 1) - targets.float()) / 2).square().mean(dim=(1, 2, 3))
    return [float(10 * math.log10(1.0 / max(v, 1e-12))) for v in mse.tolist()]


def has_noise_inputs(generator) -> bool:
    """StyleGAN2 has per-layer noise maps; StyleGAN3 has none."""
    return getattr(generator, "family", "stylegan2") != "stylegan3" and hasattr(generator, "noise_buffers")


def w_statistics(generator, samples: int = W_STD_SAMPLES, seed: int = 0) -> float:
    """The scalar spread of w (root mean squared distance to the mean) over ``samples`` mapped z.

    Conditional generators: each z gets a uniformly random class, as their ``w_avg`` is estimated; the
    projection itself optimises w directly and needs no class (the picture's class is what it finds)."""
    gen = torch.Generator().manual_seed(seed)
    device = generator.w_avg.device
    c_dim = int(getattr(generator, "c_dim", 0) or 0)
    ws = []
    with torch.no_grad():
        for start in range(0, samples, 2000):
            count = min(2000, samples - start)
            z = torch.randn(count, generator.z_dim, generator=gen).to(device)
            c = None
            if c_dim:
                c = F.one_hot(torch.randint(c_dim, (count,), generator=gen), c_dim).float().to(device)
            ws.append(generator.mapping(z, c=c)[:, 0].double())
    w = torch.cat(ws)
    return float((w - w.mean(dim=0)).square().sum(dim=1).mean().sqrt())


def noise_regularization(maps: list[torch.Tensor]) -> torch.Tensor:
    """NVlabs' penalty: squared autocorrelation at shift 1 along both axes, at every scale down to 8 px."""
    total = 0
    for noise in maps:
        noise = noise[None, None]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def with_noise_maps(generator, maps: list[torch.Tensor]):
    """A copy of ``generator`` whose stored ("const") noise is ``maps``; the original is untouched."""
    with torch.inference_mode(False):
        clone = copy.deepcopy(generator)
        for buffer, noise in zip(clone.noise_buffers(), maps):
            buffer.copy_(noise.detach())
    clone.source_file = None  # other weights than the file's: caches keyed by the file must not match it
    return clone


def project_image(generator, image, *, distance: str = "lpips", lpips: LPIPSVGG | None = None, clip=None,
                  steps: int = 1000, space: str = "wplus", w_fraction: float = 0.5, lr: float = 0.1,
                  wplus_lr: float = 0.05, pixel_weight: float = 0.0, optimize_noise: bool | None = None,
                  noise_weight: float = NOISE_WEIGHT, fit: str = "crop", tune_steps: int = 0,
                  tune_lr: float = TUNE_LR, tune_pixel_weight: float = 1.0, seed: int = 0,
                  callback: Callable[[ProjectStep], None] | None = None, preview_every: int = 0,
                  reuse_cpu_memory: bool = False) -> ProjectResult:
    """Project ``image`` (any picture or batch, see :mod:`.image`) into ``generator``'s W (+W+) and
    optionally tune a copy of the generator around the result (see the module doc).

    distance    "lpips" (needs ``lpips``, from :func:`.distance.load_lpips`), "pixel", "multiscale" or
                "clip" (needs ``clip``); ``pixel_weight`` adds MSE to a non-pixel distance
    steps       projection steps, ``w_fraction`` of them in W, the rest in W+ (``space="w"``: all in W)
    lr, wplus_lr  peak learning rates of the two phases (NVlabs' W phase: 0.1)
    tune_steps  0 = no tuning; PTI uses about 350
    callback    called after every step with a :class:`ProjectStep`; its exceptions propagate (Cancel)
    """
    steps = check_int("steps", steps, 1, MAX_STEPS)
    tune_steps = check_int("tune_steps", tune_steps, 0, MAX_STEPS)
    preview_every = check_int("preview_every", preview_every, 0, MAX_STEPS)
    seed = check_int("seed", seed, 0, MAX_SEED)
    lr, wplus_lr, tune_lr = (check_weight(n, v, positive=True) for n, v in
                             (("lr", lr), ("wplus_lr", wplus_lr), ("tune_lr", tune_lr)))
    pixel_weight, noise_weight, tune_pixel_weight = (check_weight(n, v) for n, v in (
        ("pixel_weight", pixel_weight), ("noise_weight", noise_weight), ("tune_pixel_weight", tune_pixel_weight)))
    w_fraction = check_weight("w_fraction", w_fraction)
    if space not in SPACES:
        raise ParameterError(f"space: expected one of {SPACES}, got {space!r}", parameter="space")
    if w_fraction > 1:
        raise ParameterError(f"w_fraction: expected a fraction in [0, 1], got {w_fraction}", parameter="w_fraction")
    device = generator.w_avg.device
    targets = prepare_target(image, generator.resolution, fit).to(device).clone()
    w_steps = steps if space == "w" else round(steps * w_fraction)
    noise_wanted = (tune_steps > 0) if optimize_noise is None else bool(optimize_noise)
    noise_wanted = noise_wanted and has_noise_inputs(generator)
    total = steps + tune_steps
    history: dict[str, list[float]] = {}
    cpu_gen = torch.Generator().manual_seed(seed)

    with torch.inference_mode(False), torch.enable_grad(), \
            reuse_freed_memory(reuse_cpu_memory and device.type == "cpu"):
        measure = Distance(distance, targets, lpips=lpips, clip=clip, pixel_weight=pixel_weight)
        noise_maps = None
        if noise_wanted:
            noise_maps = [torch.randn(b.shape, generator=cpu_gen).to(device, b.dtype).requires_grad_(True)
                          for b in generator.noise_buffers()]
        batch = targets.shape[0]
        w_std = w_statistics(generator, seed=seed) if w_steps > 0 else 0.0
        start = generator.w_avg.detach().float()[None, None].expand(batch, 1, -1).clone()

        def render(ws, maps=noise_maps, g=generator):
            if maps is None:
                return g.synthesis(ws, noise_mode="const")
            return g.synthesis(ws, noise_mode="const", noise_maps=maps)

        def run_phase(name, code, phase_steps, peak_lr, first_step, make_ws, jitter):
            params = [code] + (noise_maps or [])
            optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=peak_lr)
            losses = history.setdefault(name, [])
            for step in range(phase_steps):
                t = step / phase_steps
                step_lr = lr_schedule(t, peak_lr)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                ws = make_ws(code)
                if jitter:
                    scale = w_std * W_JITTER * max(0.0, 1.0 - t / W_JITTER_RAMP) ** 2
                    ws = ws + torch.randn(ws.shape[0], 1, ws.shape[2], generator=cpu_gen).to(device) * scale
                images = render(ws)
                per_image = measure(images)
                loss = per_image.sum()
                if noise_maps is not None:
                    loss = loss + noise_weight * noise_regularization(noise_maps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if noise_maps is not None:
                    with torch.no_grad():
                        for noise in noise_maps:
                            noise -= noise.mean()
                            noise *= noise.square().mean().rsqrt()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ParameterError(f"the projection diverged at {name} step {step + 1} (loss {value}); "
                                         "lower the learning rate", parameter="lr" if name == "w" else "wplus_lr")
                losses.append(value)
                if callback is not None:
                    last = step + 1 == phase_steps
                    want_preview = preview_every > 0 and ((step + 1) % preview_every == 0 or last)
                    callback(ProjectStep(phase=name, step=first_step + step + 1, total=total, lr=step_lr,
                                         loss=value, distance=per_image.detach().tolist(),
                                         preview=images.detach() if want_preview else None))

        w_code = start.clone().requires_grad_(True)
        if w_steps > 0:
            run_phase("w", w_code, w_steps, lr, 0, lambda c: c.expand(-1, generator.num_ws, -1), jitter=True)
        ws_code = w_code.detach().expand(-1, generator.num_ws, -1).clone().requires_grad_(True)
        if steps - w_steps > 0:
            run_phase("wplus", ws_code, steps - w_steps, wplus_lr, w_steps, lambda c: c, jitter=False)
        ws = ws_code.detach()
        final_maps = [n.detach() for n in noise_maps] if noise_maps is not None else None
        with torch.no_grad():
            images = render(ws, final_maps)
        before = psnr(images, targets)
        result_generator = None
        if tune_steps > 0:
            result_generator = tune_generator(generator, ws, measure, tune_steps, lr=tune_lr,
                                              pixel_weight=tune_pixel_weight, noise_maps=final_maps,
                                              callback=callback, first_step=steps, total=total,
                                              preview_every=preview_every, history=history)
            with torch.no_grad():
                images = result_generator.synthesis(ws, noise_mode="const")
        elif final_maps is not None:
            result_generator = with_noise_maps(generator, final_maps)
    return ProjectResult(ws=ws, images=images.detach(), targets=targets, psnr=psnr(images, targets),
                         psnr_before_tuning=before, generator=result_generator, noise_maps=final_maps,
                         history=history)


def tune_generator(generator, ws: torch.Tensor, measure: Callable[[torch.Tensor], torch.Tensor], steps: int,
                   *, lr: float = TUNE_LR, pixel_weight: float = 1.0, noise_maps: list[torch.Tensor] | None = None,
                   callback: Callable[[ProjectStep], None] | None = None, first_step: int = 0,
                   total: int | None = None, preview_every: int = 0, history: dict | None = None):
    """Pivotal tuning: a fine-tuned COPY of ``generator`` (synthesis weights only; the mapping stays, so
    ``w_avg`` and random codes keep their meaning) whose render of the pivot ``ws`` is closer to the
    targets held by ``measure``. ``noise_maps`` (from projection) become the copy's stored noise."""
    steps = check_int("tune_steps", steps, 1, MAX_STEPS)
    targets = measure.targets
    with torch.inference_mode(False), torch.enable_grad():
        tuned = with_noise_maps(generator, noise_maps) if noise_maps is not None else copy.deepcopy(generator)
        tuned.source_file = None  # tuned weights: no longer the file's
        modulation = getattr(tuned, "modulation", None)
        if modulation is not None and modulation != "weight":
            tuned.modulation = "weight"  # the activation form's hand-written backward computes no weight gradient
        params = []
        for name, param in tuned.named_parameters():
            trainable = not name.startswith("mapping")
            param.requires_grad_(trainable)
            if trainable:
                params.append(param)
        optimizer = torch.optim.Adam(params, lr=lr)
        losses = history.setdefault("tune", []) if history is not None else []
        ws = ws.detach()
        try:
            for step in range(steps):
                images = tuned.synthesis(ws, noise_mode="const")
                per_image = measure(images)
                if pixel_weight and measure.kind != "pixel":
                    per_image = per_image + pixel_weight * (images - targets).square().mean(dim=(1, 2, 3))
                loss = per_image.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ParameterError(f"pivotal tuning diverged at step {step + 1} (loss {value}); lower "
                                         "tune_lr", parameter="tune_lr")
                losses.append(value)
                if callback is not None:
                    last = step + 1 == steps
                    want_preview = preview_every > 0 and ((step + 1) % preview_every == 0 or last)
                    callback(ProjectStep(phase="tune", step=first_step + step + 1, total=total or steps, lr=lr,
                                         loss=value, distance=per_image.detach().tolist(),
                                         preview=images.detach() if want_preview else None))
        finally:
            tuned.requires_grad_(False)
            tuned.eval()
            if modulation is not None:
                tuned.modulation = modulation
    if hasattr(tuned, "name"):
        tuned.name = f"{tuned.name}-tuned"
    return tuned
