"""The sound-guided W+ optimiser: Adam on the paper's objective, batched, seeded and cancellable.

Faithful to the released loop (``optimization/run_optimization.py``) in its mathematics: Adam with
default betas, the learning rate ramped up linearly over the first 5 % of the steps and down with a
half cosine over the last 25 % (so the very first step has lr 0, as there), the generator's
constant noise, and the three starting points: a given source code (edit), a random code drawn
with truncation (edit, ``source_ws="random"``), or the mean latent (free generation, no
similarity or identity term). Differences, all on purpose:

- one graph for B edits; the loss is the SUM of per-sample losses, so each code follows exactly
  the trajectory it would follow alone (Adam is element-wise);
- the CLIP term is ``1 - cos`` (the original scales cos by exp(0.07), see ``objective.py``);
- the identity term's gradient reaches ``w`` (see ``identity.py``); it is skipped when lambda_id = 0;
- target embeddings and the source identity features are computed once; the nets are frozen;
  the adaptive mask is updated on the device (no per-layer host syncs); at most one host sync per
  step, and only when a callback wants numbers;
- on CPU, freed memory stays mapped between steps (``sgim_nodes.memory``; ``reuse_cpu_memory``);
  the generator's own memory savings (hand-written backward, last block in strips) are in
  ``sgim_nodes.stylegan.network``.

Defaults: lr 0.1 and 300 steps (the landscape example) with the argparse lambda_sim 0.008 and
lambda_id 0; :data:`PRESETS` holds the two released settings.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import Cancelled, NonFiniteError, ParameterError
from ..limits import (MAX_BATCH, MAX_LR, MAX_SEED, MAX_STEPS, MAX_TRUNCATION, check_float, check_int,
                      check_weight)
from ..memory import reuse_freed_memory
from ..presets import PRESETS  # noqa: F401  (re-exported: the released settings)
from .identity import identity_features, identity_loss
from .layer_mask import LayerMask, adaptive_init, adaptive_update_, resolve_layer_mask
from .objective import combine_targets, cosine_distance, similarity_terms

LOSS_TERMS = ("total", "clip", "similarity", "identity")
RAMP_UP = 0.05
RAMP_DOWN = 0.25


def lr_schedule(t: float, base_lr: float, rampdown: float = RAMP_DOWN, rampup: float = RAMP_UP) -> float:
    """The original schedule at progress ``t = step / steps``: linear warm-up, half-cosine cool-down."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base_lr * ramp * min(1.0, t / rampup)


@dataclass
class StepInfo:
    """What the callback receives after each step.

    ``losses``: batch sums of the terms in :data:`LOSS_TERMS` (``similarity`` is the weighted latent
    distance before lambda_sim, ``identity`` is ``1 - cos`` before lambda_id, ``total`` is the
    objective). ``per_sample``: the same, one value per edit. ``preview``: every ``preview_every``
    steps (and at the last step) the images rendered at this step, the generator's raw output
    ``[B, 3, H, W]`` (nominally [-1, 1], not clamped), detached; otherwise None.
    """

    step: int  # 1-based: steps done so far
    total: int
    lr: float
    losses: dict[str, float]
    per_sample: dict[str, list[float]]
    preview: torch.Tensor | None = None


@dataclass
class OptimizeResult:
    """Final W+ ``[B, num_ws, w_dim]``, the starting W+, and per-step loss history ``{term: [steps, B]}``."""

    ws: torch.Tensor
    source_ws: torch.Tensor
    history: dict[str, torch.Tensor]
    mode: str  # "edit" | "generate"
    images: torch.Tensor | None = None  # final render (raw generator output), when requested
    adaptive_logits: torch.Tensor | None = None  # final adaptive-mask logits [B, num_ws]
    layer_mask: LayerMask | None = field(default=None, repr=False)


def sample_source_ws(generator, batch: int, seed: int, truncation: float = 0.7, labels=None,
                     labels_name: str = "labels") -> torch.Tensor:
    """Random source codes as the released edit mode draws them: z ~ N(0, I) (seeded), mapped, truncated.

    ``labels`` (conditional generators): a class index or name, one per image, or label vectors (see
    :func:`sgim_nodes.stylegan.labels.class_labels`); None/-1 draws one random class per image from the
    same seed, after z. An unconditional generator refuses a class; ``labels_name`` is the input or
    option named in that error.
    """
    from ..stylegan.labels import class_labels

    batch = check_int("batch", batch, 1, MAX_BATCH, "a batch size")
    seed = check_int("seed", seed, 0, MAX_SEED, "a seed")
    truncation = check_float("truncation", truncation, 0.0, MAX_TRUNCATION, what="a truncation psi")
    device = _device_of(generator)
    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(batch, generator.z_dim, generator=rng).to(device)
    c = class_labels(generator, labels, batch, rng=rng, name=labels_name)
    with torch.no_grad():
        ws = generator.mapping(z, truncation_psi=truncation, c=None if c is None else c.to(device))
    return _as_wplus(ws, generator.num_ws, "mapping output")


def optimize_latent(generator, clip, targets: torch.Tensor, source_ws: torch.Tensor | str | None = None, *,
                    steps: int = 300, lr: float = 0.1, lambda_sim: float = 0.008, lambda_id: float = 0.0,
                    layer_weights=None, adaptive_mask: bool = False, id_model: nn.Module | None = None,
                    seed: int = 0, callback: Callable[[StepInfo], None] | None = None, preview_every: int = 0,
                    should_cancel: Callable[[], bool] | None = None, target_weights: torch.Tensor | None = None,
                    truncation: float = 0.7, noise_mode: str = "const", cosine_scale: float = 1.0,
                    return_images: bool = True, autocast: str | None = None, channels_last: bool | None = None,
                    compile: bool = False, modulation: str | None = "activation",
                    reuse_cpu_memory: bool = False, init_ws: torch.Tensor | None = None) -> OptimizeResult:
    """Optimise W+ codes so the generated images move toward CLIP-space ``targets``.

    generator   from ``sgim_nodes.stylegan`` (``synthesis``, ``mapping``, ``num_ws``, ``w_dim``, ``w_avg``).
                Frozen in place (eval, no parameter gradients); only the W+ codes are optimised.
    clip        a ``sgim_nodes.clip`` ClipModel (``embed_dim``, ``image_features``).
    targets     ``[B, D]`` unit embeddings (audio or text), or ``[B, K, D]`` with ``target_weights``
                ``[K]``/``[B, K]`` (default uniform): a weighted set combined into one objective.
    source_ws   ``[B, num_ws, w_dim]`` (or ``[B, w_dim]``, broadcast to every row): edit mode;
                ``"random"``: edit a code drawn from ``seed`` with ``truncation`` (conditional generators:
                a random class per image; pick one with ``sample_source_ws(..., labels=)`` instead);
                ``None``: free generation from the mean latent (CLIP term only).
                A batch of 1 on either side is broadcast to the other's batch.
    layer_weights  None (all layers, g = 1), a preset name, ``num_ws`` numbers, or a LayerMask
                (frozen layers stay bit-identical to the start).
    adaptive_mask  the released code's adaptive layer masking (see ``layer_mask.py``).
    id_model    an ArcFace IR-SE50 (``load_id_model``), required when lambda_id > 0 in edit mode.
    callback    called after every step with a :class:`StepInfo`; its exceptions propagate.
    should_cancel  polled before every step; True raises :class:`Cancelled`.
    autocast    None, "bf16" or "fp16" (CUDA only; the losses are still summed in float32).
    channels_last  None leaves the nets' memory layout alone; True/False switches the generator
                (``synthesis_network.set_channels_last``) and the identity net (in place).
    modulation  the generator's modulated-convolution form during the run ("activation": no per-sample
                weight gradients in backward, one convolution per batch; restored afterwards); None keeps it.
    compile     wrap rendering + CLIP in ``torch.compile`` (per call; on this 2-core CPU it took
                minutes to compile and ran slower than eager, so it is off by default).
    reuse_cpu_memory  on CPU, keep freed activation memory mapped between steps instead of page-faulting
                it in again every step (``sgim_nodes.memory``; about half the step time at 1024 px). Off
                by default: it changes process-wide allocator settings, so jobs leave it to their run
                (``Run.cpu_memory``), which only the command line's run turns on.
    init_ws     edit mode only: where the optimisation starts (``[B, num_ws, w_dim]``), while the
                similarity term still pulls toward ``source_ws`` (warm starts, e.g. the keyframes of
                ``sgim_nodes.animate``). Default: start at the source.
    """
    steps = check_int("steps", steps, 1, MAX_STEPS, "a number of steps")
    preview_every = check_int("preview_every", preview_every, 0, MAX_STEPS, "a number of steps")
    lr = check_weight("lr", lr, positive=True)
    if lr > MAX_LR:
        raise ParameterError(f"lr: expected a learning rate up to {MAX_LR:g} (the paper uses 0.05-0.1), got {lr!r}",
                             parameter="lr")
    seed = check_int("seed", seed, 0, MAX_SEED, "a seed")
    lambda_sim = check_weight("lambda_sim", lambda_sim)
    lambda_id = check_weight("lambda_id", lambda_id)
    cosine_scale = check_weight("cosine_scale", cosine_scale, positive=True)
    if noise_mode not in ("const", "random", "none"):
        raise ParameterError(f"noise_mode: expected 'const', 'random' or 'none', got {noise_mode!r}",
                             parameter="noise_mode")
    device = _device_of(generator)
    amp = _autocast_context(autocast, device)
    num_ws = int(generator.num_ws)

    with torch.inference_mode(False), torch.enable_grad(), _seeded(seed, device), \
            _modulation_mode(generator, modulation), reuse_freed_memory(reuse_cpu_memory and device.type == "cpu"):
        mask = resolve_layer_mask(layer_weights, num_ws, getattr(generator, "ws_resolutions", None))
        # Tensors made under inference mode (ComfyUI) cannot enter autograd: clone everything we use.
        for net in (generator, _module_of(clip), id_model):
            _freeze_(net)
        if channels_last is not None:
            _set_channels_last(generator, id_model, channels_last)
        if not isinstance(targets, torch.Tensor):
            raise ParameterError(f"targets: expected a tensor of CLIP embeddings, got {type(targets).__name__}",
                                 parameter="targets")
        target_vector, target_offset = combine_targets(targets.detach().clone().to(device),
                                                       None if target_weights is None else
                                                       torch.as_tensor(target_weights).detach().clone(),
                                                       embed_dim=int(clip.embed_dim))
        start, mode = _starting_codes(generator, source_ws, target_vector.shape[0], seed, truncation)
        batch = max(start.shape[0], target_vector.shape[0])
        start = _broadcast_batch(start, batch, "source_ws", target_vector.shape[0])
        target_vector = _broadcast_batch(target_vector, batch, "targets", start.shape[0])
        target_offset = target_offset.expand(batch)
        editing = mode == "edit"
        use_identity = editing and lambda_id > 0
        if use_identity and id_model is None:
            raise ParameterError("id_model: lambda_id > 0 needs the ArcFace IR-SE50 identity model "
                                 "(load it with sgim_nodes.optimize.load_id_model), or set lambda_id to 0",
                                 parameter="id_model")

        render = _renderer(generator, clip, noise_mode, compile)
        source_id_features = None
        if use_identity:
            with torch.no_grad(), amp:
                source_id_features = identity_features(id_model, generator.synthesis(start, noise_mode=noise_mode)
                                                       ).float()

        layer_g = mask.weights.detach().clone().to(device)  # the mask may have been built under inference mode
        editable = mask.editable.to(device)
        all_editable = editable.numel() == num_ws
        if init_ws is not None:
            if not editing:
                raise ParameterError("init_ws: a warm start needs a source code (edit mode)")
            init = _broadcast_batch(_as_wplus(init_ws.detach().clone().to(device).float(), num_ws, "init_ws",
                                              int(generator.w_dim)), batch, "init_ws", batch)
            if not torch.isfinite(init).all():
                raise ParameterError("init_ws: contains NaN or infinite values")
            start_trainable = init[:, editable]
        else:
            start_trainable = start[:, editable]
        trainable = start_trainable.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([trainable], lr=lr)
        logits = adaptive_init(batch, num_ws, device) if (adaptive_mask and editing) else None
        history = _LossHistory(steps, batch, device)
        zero = torch.zeros(batch, device=device)

        def current_ws() -> torch.Tensor:
            return trainable if all_editable else start.index_copy(1, editable, trainable)

        for step in range(steps):
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"optimisation cancelled before step {step + 1} of {steps}")
            step_lr = lr_schedule(step / steps, lr)
            optimizer.param_groups[0]["lr"] = step_lr
            ws = current_ws()
            with amp:
                images, features = render(ws)
                identity = identity_loss(id_model, images, source_id_features) if use_identity else zero
            clip_term = cosine_distance(features, target_vector, target_offset, cosine_scale)
            similarity = zero
            if editing:
                layer_terms = similarity_terms(ws, start, layer_g, logits)
                similarity = layer_terms.sum(dim=-1)
                if logits is not None:
                    adaptive_update_(logits, layer_terms)
            total = clip_term + lambda_sim * similarity + lambda_id * identity.float()
            optimizer.zero_grad(set_to_none=True)
            total.sum().backward()
            optimizer.step()
            row = history.row(step)
            row.copy_(torch.stack([total, clip_term, similarity, identity.float()]).detach())
            if callback is not None:
                values = row.tolist()  # the step's only host sync
                if not all(math.isfinite(v) for term in values for v in term):
                    _raise_non_finite(step + 1, lr, values)
                want_preview = preview_every > 0 and ((step + 1) % preview_every == 0 or step + 1 == steps)
                callback(StepInfo(step=step + 1, total=steps, lr=step_lr,
                                  losses={name: float(sum(v)) for name, v in zip(LOSS_TERMS, values)},
                                  per_sample=dict(zip(LOSS_TERMS, values)),
                                  preview=images.detach() if want_preview else None))
            elif (step + 1) % NON_FINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(row).all()):
                _raise_non_finite(step + 1, lr, row.tolist())

        with torch.no_grad():
            final_ws = current_ws().detach().clone()
            final_images = generator.synthesis(final_ws, noise_mode=noise_mode).float() if return_images else None
        # Nothing non-finite leaves the optimiser: the last steps may not have been checked yet.
        if not bool(torch.isfinite(final_ws).all()) or (final_images is not None
                                                         and not bool(torch.isfinite(final_images).all())):
            _raise_non_finite(steps, lr, None)
        losses = history.tensor()
    return OptimizeResult(ws=final_ws, source_ws=start.detach().clone(),
                          history={name: losses[:, k].clone() for k, name in enumerate(LOSS_TERMS)},
                          mode=mode, images=final_images,
                          adaptive_logits=None if logits is None else logits.clone(), layer_mask=mask)


# ----------------------------------------------------------------------------- helpers

NON_FINITE_CHECK_EVERY = 8  # without a callback (which syncs every step anyway), check the losses this often


class _LossHistory:
    """Per-step losses ``[steps, terms, B]`` grown in blocks as the run goes, so a huge ``steps``
    allocates nothing up front (and a cancelled run holds only what it used)."""

    BLOCK = 1024

    def __init__(self, steps: int, batch: int, device: torch.device):
        self.steps, self.batch, self.device = steps, batch, device
        self.blocks: list[torch.Tensor] = []

    def row(self, step: int) -> torch.Tensor:
        block, offset = divmod(step, self.BLOCK)
        while len(self.blocks) <= block:
            rows = min(self.BLOCK, self.steps - len(self.blocks) * self.BLOCK)
            self.blocks.append(torch.zeros(rows, len(LOSS_TERMS), self.batch, device=self.device))
        return self.blocks[block][offset]

    def tensor(self) -> torch.Tensor:
        if not self.blocks:
            return torch.zeros(0, len(LOSS_TERMS), self.batch, device=self.device)
        return torch.cat(self.blocks) if len(self.blocks) > 1 else self.blocks[0]


def _raise_non_finite(step: int, lr: float, values) -> None:
    terms = ""
    if values is not None:
        terms = " (" + ", ".join(f"{name} {sum(v):.4g}" for name, v in zip(LOSS_TERMS, values)) + ")"
    raise NonFiniteError(
        f"the optimisation went non-finite (NaN or infinite) by step {step}{terms}; nothing was returned or saved. "
        f"Lower lr (now {lr:g}), check that the source code and targets are ordinary values, or use a "
        "float32 generator", parameter="lr")


def _renderer(generator, clip, noise_mode: str, use_compile: bool):
    def render(ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = generator.synthesis(ws, noise_mode=noise_mode)
        return images, clip.image_features(images)

    return torch.compile(render) if use_compile else render


def _starting_codes(generator, source_ws, batch: int, seed: int, truncation: float) -> tuple[torch.Tensor, str]:
    num_ws, w_dim = int(generator.num_ws), int(generator.w_dim)
    device = _device_of(generator)
    if source_ws is None:
        w_avg = generator.w_avg.detach().clone().to(device).float()
        return w_avg.reshape(1, 1, w_dim).expand(batch, num_ws, w_dim).clone(), "generate"
    if isinstance(source_ws, str):
        if source_ws != "random":
            raise ParameterError(f"source_ws: expected a W+ tensor, 'random' or None, got {source_ws!r}",
                                 parameter="source_ws")
        truncation = check_weight("truncation", truncation)
        return sample_source_ws(generator, batch, seed, truncation).detach().clone(), "edit"
    if not isinstance(source_ws, torch.Tensor):
        raise ParameterError(f"source_ws: expected a W+ tensor, 'random' or None, got {type(source_ws).__name__}",
                             parameter="source_ws")
    from ..latents import check_wplus_values

    start = _as_wplus(source_ws.detach().clone().to(device).float(), num_ws, "source_ws", w_dim)
    return check_wplus_values(start, "source_ws", "source_ws"), "edit"  # a huge code would render NaN


def _as_wplus(ws: torch.Tensor, num_ws: int, name: str, w_dim: int | None = None) -> torch.Tensor:
    if ws.ndim == 2:
        ws = ws[:, None].expand(-1, num_ws, -1)
    w_dim = ws.shape[-1] if w_dim is None else w_dim
    if ws.ndim != 3 or ws.shape[1] != num_ws or ws.shape[2] != w_dim:
        raise ParameterError(f"{name}: expected [B, {num_ws}, {w_dim}] (the generator's num_ws and w_dim) or "
                             f"[B, {w_dim}], got {tuple(ws.shape)}", parameter=name)
    return ws.contiguous()


def _broadcast_batch(x: torch.Tensor, batch: int, name: str, other: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:]).clone()
    raise ParameterError(f"{name}: batch {x.shape[0]} does not match the other side's batch {other} "
                         "(give the same number of sources and targets, or one of either)", parameter=name)


def _set_channels_last(generator, id_model: nn.Module | None, enabled: bool) -> None:
    synthesis = getattr(generator, "synthesis_network", None)
    if hasattr(synthesis, "set_channels_last"):
        synthesis.set_channels_last(enabled)
    if id_model is not None:
        id_model.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)


def _module_of(clip) -> nn.Module | None:
    if isinstance(clip, nn.Module):
        return clip
    return getattr(clip, "model", None) if isinstance(getattr(clip, "model", None), nn.Module) else None


def _freeze_(net: nn.Module | None) -> None:
    """Eval mode, no parameter gradients, and no inference-mode tensors left in the module (in place)."""
    if net is None:
        return
    for module in net.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is not None and tensor.is_inference():
                    copy = tensor.clone()
                    table[name] = nn.Parameter(copy, requires_grad=False) if table is module._parameters else copy
    net.eval().requires_grad_(False)


def _device_of(generator) -> torch.device:
    for tensor in generator.parameters():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def _modulation_mode(generator, mode: str | None):
    """Temporarily switch a generator that offers both forms (same function, different cost)."""
    previous = getattr(generator, "modulation", None)
    if mode is None or previous is None or previous == mode:
        yield
        return
    generator.modulation = mode
    try:
        yield
    finally:
        generator.modulation = previous


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(check_int("seed", seed, 0, MAX_SEED, "a seed"))
        yield


def _autocast_context(autocast: str | None, device: torch.device):
    if autocast in (None, "", "none", "fp32"):
        return contextlib.nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if autocast not in dtypes:
        raise ParameterError(f"autocast: expected None, 'bf16' or 'fp16', got {autocast!r}", parameter="autocast")
    if device.type != "cuda":
        raise ParameterError(f"autocast: {autocast} is offered on CUDA only (the generator is on {device})",
                             parameter="autocast")
    return torch.autocast(device_type="cuda", dtype=dtypes[autocast])
