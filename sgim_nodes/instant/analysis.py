"""Global StyleSpace directions of a generator in CLIP space (StyleCLIP's recipe), analysed once.

For each style channel ``c`` the analysis estimates ``d_c = E_n[ f(s_n + sigma_c e_c) - f(s_n) ]`` per
standard deviation, where ``f`` is the unit CLIP image embedding of the rendered image and ``s_n`` the
styles of N sample codes (z seeded, mapped with the recorded truncation). Two methods:

- ``"finite"``: StyleCLIP's central differences, ``(f(s + k sigma e_c) - f(s - k sigma e_c)) / 2k``:
  2 renders per channel and sample (about 18,000 per sample at 1024 px with ToRGB channels).
- ``"jacobian"`` (default): the exact derivative ``J_n sigma`` (the ``k -> 0`` limit of the above) by
  reverse mode: one forward, then one backward per CLIP dimension ``D`` gives the whole Jacobian
  ``[D, channels]`` of a batch of samples. Reverse mode wins because ``D`` (512 for ViT-B/32) is far
  smaller than the number of style channels (about 9,000 at 1024 px); forward-mode JVPs would need one
  pass per channel, like finite differences. The backward passes reuse one retained graph and the
  generator's hand-written activation-form backward. Against finite differences with small ``k`` the
  two agree to float precision (tests/test_instant.py); at large ``k`` they differ by the curvature the
  linear model ignores.

The mean unit embedding of the samples is recorded too (one of the neutral references of the edit).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from ..errors import ParameterError
from ..limits import MAX_SEED, MAX_TRUNCATION, check_float, check_int
from ..stylegan.stylespace import StyleLayer, flatten_styles, style_table, unflatten_styles

ANALYSIS_METHODS = ("jacobian", "finite")
MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class AnalysisSettings:
    """What an analysis computes (all but ``batch`` are recorded and part of the cache key).

    samples     N sample images the changes are averaged over (StyleCLIP used 100-200 for FFHQ).
    k           finite differences: the channel moves by +-k standard deviations (unused by "jacobian",
                its k -> 0 limit, but recorded).
    truncation  psi of the sample codes (and of the codes the standard deviations are measured on).
    std_samples codes whose styles give each channel's mean and standard deviation (mapping only, cheap).
    """

    samples: int = 64
    k: float = 1.0
    truncation: float = 0.7
    seed: int = 0
    method: str = "jacobian"
    std_samples: int = 2048
    noise_mode: str = "const"
    normalize_input: bool = False
    batch: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", check_int("samples", self.samples, 1, MAX_SAMPLES, "a number of samples"))
        object.__setattr__(self, "std_samples", check_int("std_samples", self.std_samples, 2, 1_000_000,
                                                          "a number of samples"))
        object.__setattr__(self, "k", check_float("k", self.k, 0.0, 100.0, exclusive_minimum=True,
                                                  what="a number of standard deviations"))
        object.__setattr__(self, "truncation", check_float("truncation", self.truncation, 0.0, MAX_TRUNCATION,
                                                           what="a truncation psi"))
        object.__setattr__(self, "seed", check_int("seed", self.seed, 0, MAX_SEED, "a seed"))
        object.__setattr__(self, "batch", check_int("batch", self.batch, 1, 4096, "a batch size"))
        if self.method not in ANALYSIS_METHODS:
            raise ParameterError(f"method: expected one of {ANALYSIS_METHODS}, got {self.method!r}",
                                 parameter="method")
        if self.noise_mode not in ("const", "none"):
            raise ParameterError(f"noise_mode: the analysis needs a deterministic render, 'const' or 'none', got "
                                 f"{self.noise_mode!r}", parameter="noise_mode")

    def key(self) -> dict:
        """The settings that change the result (the batch size only changes speed)."""
        out = asdict(self)
        out.pop("batch")
        return out


@dataclass
class StyleDirections:
    """The analysis result. ``directions`` [C, D]: mean change of the unit CLIP image embedding per +1
    standard deviation of each flat style channel; ``style_mean``/``style_std`` [C]; ``mean_embedding`` [D]:
    mean unit embedding of the sample images; ``layers``: the style table the channels follow; ``info``:
    generator and CLIP identity, settings, cost (seconds, channel-images)."""

    directions: torch.Tensor
    style_mean: torch.Tensor
    style_std: torch.Tensor
    mean_embedding: torch.Tensor
    layers: list[StyleLayer]
    info: dict = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return int(self.directions.shape[0])

    def unit_directions(self) -> torch.Tensor:
        """[C, D] directions normalised to unit length (0 for a channel that changes nothing)."""
        norm = self.directions.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, self.directions / norm.clamp_min(1e-30), torch.zeros_like(self.directions))

    def check_matches(self, generator, embed_dim: int | None = None) -> None:
        table = style_table(generator)
        if [(l.name, l.row, l.channels) for l in table] != [(l.name, l.row, l.channels) for l in self.layers]:
            raise ParameterError(f"directions: analysed for another architecture than generator '{generator.name}' "
                                 "(its style layers differ); analyse this generator", parameter="directions")
        if embed_dim is not None and embed_dim != self.directions.shape[1]:
            raise ParameterError(f"directions: analysed with a CLIP of width {self.directions.shape[1]}, the targets "
                                 f"have width {embed_dim} (another CLIP model?)", parameter="clip")


@dataclass
class PartialAnalysis:
    """The running sums of an unfinished analysis (what resume needs)."""

    done: int
    total: torch.Tensor  # [C, D] float64 sum over done samples
    embedding_total: torch.Tensor  # [D] float64
    seconds: float


def sample_codes(generator, count: int, seed: int, truncation: float, start: int = 0, batch: int = 256
                 ) -> torch.Tensor:
    """W+ codes ``start .. start+count`` of the seeded sample sequence (z on the CPU from ``seed``; conditional
    generators: a random class per code from the same seed), so a resumed analysis sees the same codes."""
    from ..stylegan.labels import class_labels

    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(start + count, generator.z_dim, generator=rng)[start:]
    c = class_labels(generator, None, start + count, rng=rng)
    c = None if c is None else c[start:]
    out = []
    with torch.no_grad():
        for i in range(0, count, batch):
            labels = None if c is None else c[i:i + batch].to(generator.device)
            out.append(generator.mapping(z[i:i + batch].to(generator.device), truncation_psi=truncation, c=labels))
    return torch.cat(out).float()


def style_statistics(generator, settings: AnalysisSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation [C] of every flat style channel over ``std_samples`` codes
    (seed + 1, the analysis truncation)."""
    total = square = None
    n = settings.std_samples
    with torch.no_grad():
        for i in range(0, n, 512):
            ws = sample_codes(generator, min(512, n - i), settings.seed + 1, settings.truncation, start=i)
            flat = flatten_styles(generator.styles(ws)).double()
            total = flat.sum(0) if total is None else total + flat.sum(0)
            square = flat.square().sum(0) if square is None else square + flat.square().sum(0)
    mean = total / n
    var = (square / n - mean.square()).clamp_min(0) * (n / (n - 1))
    return mean.float().cpu(), var.sqrt().float().cpu()


def analyze_styles(generator, clip, settings: AnalysisSettings | None = None, run=None,
                   resume: PartialAnalysis | None = None, on_chunk=None) -> StyleDirections:
    """The global directions of ``generator`` in ``clip``'s space (see the module docstring).

    ``run``: a :class:`sgim_nodes.jobs.run.Run` (progress per sample, cancel between chunks);
    ``resume``: running sums of an interrupted analysis with the same settings; ``on_chunk(partial)`` is
    called after every finished chunk (the cache saves it there, so an interruption loses one chunk).
    """
    from ..jobs.run import QuietRun
    from ..optimize.loop import _freeze_, _modulation_mode

    settings = settings or AnalysisSettings()
    run = run or QuietRun(generator.device)
    table = style_table(generator)
    channels, embed_dim = table[-1].stop, int(clip.embed_dim)
    started = time.perf_counter()
    with torch.inference_mode(False):
        for net in (generator, getattr(clip, "model", None)):
            _freeze_(net)
        run.status(f"analysing {channels} style channels of '{generator.name}' over {settings.samples} samples "
                   f"({settings.method})")
        mean, std = style_statistics(generator, settings)
        device = generator.device
        std_dev = std.to(device, torch.float64)
        done = 0
        total = torch.zeros(channels, embed_dim, dtype=torch.float64, device=device)
        embedding_total = torch.zeros(embed_dim, dtype=torch.float64, device=device)
        spent = 0.0
        if resume is not None:
            if resume.total.shape != total.shape or not 0 <= resume.done <= settings.samples:
                raise ParameterError("resume: the partial analysis does not fit this generator and CLIP",
                                     parameter="resume")
            done, spent = resume.done, resume.seconds
            total.copy_(resume.total)
            embedding_total.copy_(resume.embedding_total)
        run.progress(done, settings.samples)
        chunk_fn = _jacobian_chunk if settings.method == "jacobian" else _finite_chunk
        # activation-form convs have no forward-mode rule, but reverse mode is what is used here; the
        # finite method never differentiates, so it keeps the fast form too.
        with _modulation_mode(generator, "activation"), run.cpu_memory():
            while done < settings.samples:
                run.check_cancel()
                count = min(settings.batch, settings.samples - done)
                t0 = time.perf_counter()
                ws = sample_codes(generator, count, settings.seed, settings.truncation, start=done)
                change, embeddings = chunk_fn(generator, clip, ws, table, std_dev, settings, run)
                total += change
                embedding_total += embeddings.double().sum(0)
                done += count
                spent += time.perf_counter() - t0
                if on_chunk is not None:
                    on_chunk(PartialAnalysis(done, total.cpu(), embedding_total.cpu(), spent))
                run.progress(done, settings.samples)
    directions = (total / settings.samples).float().cpu()
    if not torch.isfinite(directions).all():
        from ..errors import NonFiniteError

        raise NonFiniteError("analysis: the CLIP embedding changes came out NaN or infinite (a generator that "
                             "renders non-finite images?)")
    info = {"settings": settings.key(), "seconds": spent, "wall_seconds": time.perf_counter() - started,
            "channels": channels, "embed_dim": embed_dim, "channel_images": channels * settings.samples,
            "device": str(generator.device)}
    return StyleDirections(directions, mean, std, (embedding_total / settings.samples).float().cpu(), table, info)


def _embed(generator, clip, flat, table, settings) -> torch.Tensor:
    """Unit CLIP image embeddings of the images of flat styles, as ``ClipModel.image_features`` computes
    them but in the networks' own dtype (a float64 check of the derivatives needs float64 throughout)."""
    from ..clip import paper_resize

    images = generator.synthesis_network.forward_styles(unflatten_styles(flat, table), settings.noise_mode)
    x = paper_resize(images.to(clip.device), clip.image_size)
    if settings.normalize_input:
        x = clip._normalize_pixels((x + 1) / 2)
    return torch.nn.functional.normalize(clip.model.encode_image(x), dim=-1)


def _jacobian_chunk(generator, clip, ws, table, std, settings, run):
    """Sum over the batch of ``J_n sigma`` [C, D] and the batch's unit embeddings, by D backward passes."""
    with torch.enable_grad():
        flat = flatten_styles(generator.styles(ws)).detach().requires_grad_(True)
        embeddings = _embed(generator, clip, flat, table, settings)
        dims = embeddings.shape[1]
        out = torch.empty(flat.shape[1], dims, dtype=torch.float64, device=flat.device)
        for d in range(dims):
            if d % 32 == 31:
                run.check_cancel()
            (grad,) = torch.autograd.grad(embeddings[:, d].sum(), flat, retain_graph=d < dims - 1)
            out[:, d] = grad.double().sum(0)
    return out * std[:, None], embeddings.detach()


def _finite_chunk(generator, clip, ws, table, std, settings, run, channels_per_pass: int = 64):
    """Sum over the batch of the central differences ``(f(s + k sigma e_c) - f(s - k sigma e_c)) / 2k``."""
    k = settings.k
    with torch.no_grad():
        flat = flatten_styles(generator.styles(ws)).detach()
        embeddings = _embed(generator, clip, flat, table, settings)
        count = flat.shape[1]
        out = torch.zeros(count, embeddings.shape[1], dtype=torch.float64, device=flat.device)
        for b in range(flat.shape[0]):
            for first in range(0, count, channels_per_pass):
                run.check_cancel()
                idx = torch.arange(first, min(first + channels_per_pass, count), device=flat.device)
                m = idx.numel()
                step = (k * std[idx]).to(flat.dtype)
                probe = flat[b].repeat(2 * m, 1)
                probe[torch.arange(m), idx] += step
                probe[torch.arange(m, 2 * m), idx] -= step
                f = _embed(generator, clip, probe, table, settings).double()
                out[idx] += (f[:m] - f[m:]) / (2 * k)
    return out, embeddings


def analysis_cost(directions: StyleDirections) -> str:
    """One line: channels, samples, seconds, seconds per channel-image."""
    info = directions.info
    seconds, channel_images = info.get("seconds", math.nan), info.get("channel_images", 0)
    per = seconds / channel_images if channel_images else math.nan
    return (f"{info.get('channels')} channels x {info.get('settings', {}).get('samples')} samples in {seconds:.1f} s "
            f"({per * 1e3:.3f} ms per channel-image, {info.get('settings', {}).get('method')})")
