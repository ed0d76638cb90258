"""Semantic keyframes: what the image should look like at moments of the track, as W+ codes.

- keyframe times every ``keyframe_seconds`` from the first frame (optionally moved to the nearest
  detected onset within half an interval), and always one at the last frame;
- each keyframe's target is the encoder embedding of the audio window (the encoder's length, about
  10 s) centred on it, optionally mixed with a text prompt: a fixed one, or a prompt schedule
  ``"0: a calm sea | 12.5: a storm at sea"`` (the prompt in force at the keyframe's time);
- the codes come from the sound-guided optimiser: the first from the source with ``steps``, each
  next one warm-started from the previous result with ``keyframe_steps`` (fewer), while the
  similarity term keeps every one near the source. Keyframe ``k`` uses seed ``seed + k``.
  With ``chain_length`` M > 0 the warm-start chain restarts from the source every M keyframes
  (keyframe ``k`` with ``k % M == 0`` gets ``steps``): the chains are then independent, so
  separate processes can optimise them (``only``) and the codes are the same as in one process.

Codes can be cached in a folder (one file per keyframe, written atomically as each finishes);
a rerun with the same inputs loads them and continues with the first missing one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import ParameterError
from .timeline import Timeline

from .defaults import DEFAULT_KEYFRAME_SECONDS, DEFAULT_STEPS, DEFAULT_KEYFRAME_STEPS  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class KeyframeSettings:
    """Optimiser settings of the keyframes (the defaults favour a fast first render)."""

    steps: int = DEFAULT_STEPS
    keyframe_steps: int = DEFAULT_KEYFRAME_STEPS
    lr: float = 0.1
    lambda_sim: float = 0.002
    layer_weights: object = None  # None, preset name, per-layer weights or a LayerMask
    seed: int = 0
    chain_length: int = 0  # restart the warm-start chain every this many keyframes (0: one chain)

    def signature(self) -> dict:
        weights = self.layer_weights
        if isinstance(weights, torch.Tensor):
            weights = weights.tolist()
        elif weights is not None and not isinstance(weights, (str, list, tuple)):
            weights = [weights.weights.tolist(), weights.frozen.tolist()]  # a LayerMask
        chain = {"chain_length": self.chain_length} if self.chain_length else {}  # old caches keep their keys
        return {"steps": self.steps, "keyframe_steps": self.keyframe_steps, "lr": self.lr,
                "lambda_sim": self.lambda_sim, "layer_weights": weights, "seed": self.seed, **chain}

    def chain_start(self, k: int) -> bool:
        """Whether keyframe ``k`` starts a chain (optimised from the source with ``steps``)."""
        return k == 0 or (self.chain_length > 0 and k % self.chain_length == 0)

    def chains(self, count: int) -> list[list[int]]:
        """The keyframe indices of each independent chain."""
        starts = [k for k in range(count) if self.chain_start(k)]
        return [list(range(a, b)) for a, b in zip(starts, starts[1:] + [count])]


@dataclass
class Keyframes:
    """Keyframe times (seconds from the timeline's start) and their codes ``[K, num_ws, w_dim]``."""

    times: list[float]
    codes: torch.Tensor
    source: torch.Tensor  # [1, num_ws, w_dim]
    generator: str = ""
    labels: list[str] = field(default_factory=list)


def keyframe_times(timeline: Timeline, keyframe_seconds: float = DEFAULT_KEYFRAME_SECONDS,
                   onset_times: Sequence[float] = (), snap_to_onsets: bool = False) -> list[float]:
    """Keyframe times in seconds from the start: 0, every ``keyframe_seconds``, and the last frame."""
    try:
        spacing = float(keyframe_seconds)
    except (TypeError, ValueError):
        spacing = float("nan")
    if not math.isfinite(spacing) or spacing <= 0:
        raise ParameterError(f"keyframe_seconds: expected a positive number of seconds, got {keyframe_seconds!r}",
                             parameter="keyframe_seconds")
    last = (timeline.frames - 1) / timeline.fps
    count = max(1, int(math.floor(last / spacing + 1e-9)) + 1)
    times = [k * spacing for k in range(count)]
    if last - times[-1] > 0.5 * spacing or len(times) == 1:
        times.append(last)
    else:
        times[-1] = last  # a short tail joins the last interval instead of making a tiny one
    if len(times) > 1 and times[-1] == times[-2]:
        times.pop()
    if snap_to_onsets and onset_times:
        onsets = sorted(float(t) for t in onset_times)
        snapped = [times[0]]
        for t in times[1:-1]:
            near = min(onsets, key=lambda o: abs(o - t))
            snapped.append(near if abs(near - t) <= 0.5 * spacing else t)
        if len(times) > 1:
            snapped.append(times[-1])
        times = sorted(set(snapped))  # snapping may merge two keyframes
    # frame-exact: a keyframe sits on a frame
    return sorted({round(t * timeline.fps) / timeline.fps for t in times})


def parse_prompt_schedule(text: str) -> list[tuple[float, str]]:
    """``"0: a calm sea | 12.5: a storm at sea"`` -> [(0.0, 'a calm sea'), (12.5, 'a storm at sea')].

    A schedule without times (``"a calm sea"``) is one prompt from 0 s. Empty text: no prompts.
    """
    entries = []
    for part in (p.strip() for p in (text or "").split("|")):
        if not part:
            continue
        head, sep, prompt = part.partition(":")
        if sep:
            try:
                time = float(head.strip())
            except ValueError:
                time, prompt = None, part
        else:
            time, prompt = None, part
        if time is None:
            if entries or "|" in text:
                raise ParameterError(f"prompt_schedule: cannot read {part!r}; expected 'SECONDS: prompt' entries "
                                     "separated by '|', e.g. '0: a calm sea | 12.5: a storm at sea'",
                                     parameter="prompt_schedule")
            time = 0.0
        if not math.isfinite(time) or time < 0:
            raise ParameterError(f"prompt_schedule: the time in {part!r} must be >= 0 seconds",
                                 parameter="prompt_schedule")
        if not prompt.strip():
            raise ParameterError(f"prompt_schedule: {part!r} has no prompt", parameter="prompt_schedule")
        entries.append((time, prompt.strip()))
    return sorted(entries, key=lambda e: e[0])


def prompt_at(schedule: list[tuple[float, str]], seconds: float) -> str | None:
    """The prompt in force at ``seconds`` of the track (the last entry at or before it; the first before it)."""
    if not schedule:
        return None
    current = schedule[0][1]
    for time, prompt in schedule:
        if time <= seconds + 1e-9:
            current = prompt
    return current


def window_start(center: float, window_seconds: float, track_seconds: float) -> float:
    """Start of the encoder window centred on ``center``, kept inside the track where possible."""
    start = center - window_seconds / 2
    return max(0.0, min(start, max(0.0, track_seconds - window_seconds)))


def keyframe_targets(times: Sequence[float], timeline: Timeline, read_window: Callable[[float, float], torch.Tensor],
                     embed_window: Callable[[torch.Tensor], torch.Tensor], window_seconds: float,
                     track_seconds: float, text_embed: Callable[[list[str]], torch.Tensor] | None = None,
                     schedule: list[tuple[float, str]] | None = None, text_weight: float = 0.0,
                     ) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Targets ``[K, M, D]`` (M = 1 sound, or 2 with a prompt), their weights ``[M]`` and labels.

    ``read_window(start, seconds)`` returns the audio there, ``embed_window(audio)`` its unit
    embedding ``[D]``; ``text_embed(prompts)`` unit text embeddings ``[P, D]``.
    """
    if not 0.0 <= float(text_weight) <= 1.0:
        raise ParameterError(f"text_weight: expected a number in [0, 1], got {text_weight!r}", parameter="text_weight")
    use_text = bool(schedule) and text_weight > 0
    if use_text and text_embed is None:
        raise ParameterError("prompt_schedule: a prompt needs the CLIP model's text encoder", parameter="prompt_schedule")
    prompts = [prompt_at(schedule, timeline.start + t) for t in times] if use_text else []
    text_vectors = {}
    if use_text:
        distinct = sorted(set(prompts))
        text_vectors = dict(zip(distinct, text_embed(distinct)))
    targets, labels = [], []
    for k, t in enumerate(times):
        start = window_start(timeline.start + t, window_seconds, track_seconds)
        sound = embed_window(read_window(start, window_seconds)).reshape(-1).float()
        parts = [sound]
        if use_text:
            parts.append(text_vectors[prompts[k]].reshape(-1).float().to(sound.device))
        targets.append(torch.stack(parts))
        labels.append(f"{t:.2f}s" + (f" + '{prompts[k]}'" if use_text else ""))
    weights = torch.tensor([1.0 - text_weight, text_weight]) if use_text else None
    return torch.stack(targets), weights, labels


def _cache_key(generator_name: str, source: torch.Tensor, targets: torch.Tensor, weights, settings: KeyframeSettings,
               times: Sequence[float]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"generator": generator_name, "settings": settings.signature(),
                              "times": [round(t, 6) for t in times]}, sort_keys=True).encode())
    for tensor in (source, targets, weights):
        if tensor is not None:
            digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def optimize_keyframes(generator, clip, targets: torch.Tensor, source_ws: torch.Tensor, times: Sequence[float],
                       settings: KeyframeSettings = KeyframeSettings(), *, target_weights: torch.Tensor | None = None,
                       cache_dir: str | Path | None = None, callback: Callable | None = None,
                       should_cancel: Callable[[], bool] | None = None, preview_every: int = 0,
                       on_keyframe: Callable[[int, bool], None] | None = None, labels: Sequence[str] = (),
                       only: Sequence[int] | None = None) -> Keyframes:
    """One W+ code per keyframe (see the module docstring). ``callback(k, StepInfo)`` after each step;
    ``on_keyframe(k, from_cache)`` after each keyframe. ``source_ws`` is ``[1, num_ws, w_dim]``.
    ``only``: optimise just these keyframes (whole chains); the result then holds their times and codes."""
    from ..latents import load_wplus, save_wplus
    from ..optimize import optimize_latent

    if targets.shape[0] != len(times):
        raise ParameterError(f"targets: {targets.shape[0]} targets for {len(times)} keyframes", parameter="targets")
    for name in ("steps", "keyframe_steps"):
        value = getattr(settings, name)
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ParameterError(f"{name}: expected an integer >= 1, got {value!r}", parameter=name)
    chain_length = settings.chain_length
    if isinstance(chain_length, bool) or int(chain_length) != chain_length or chain_length < 0:
        raise ParameterError(f"chain_length: expected an integer >= 0 (0: one chain), got {chain_length!r}",
                             parameter="chain_length")
    wanted = set(range(len(times))) if only is None else {int(k) for k in only}
    broken = [k for k in wanted if not 0 <= k < len(times) or (not settings.chain_start(k) and k - 1 not in wanted)]
    if broken:
        raise ParameterError(f"only: keyframe {min(broken)} is not in range or its chain is not whole "
                             f"(chain_length {chain_length})", parameter="only")
    generator_name = str(getattr(generator, "name", ""))
    source = source_ws.detach().float().cpu()[:1]
    folder = None
    if cache_dir is not None:
        key = _cache_key(generator_name, source, targets, target_weights, settings, times)
        folder = Path(cache_dir) / key
        folder.mkdir(parents=True, exist_ok=True)
    device = next(iter(generator.parameters())).device
    codes: list[torch.Tensor] = []
    previous = None
    for k in range(len(times)):
        if k not in wanted:
            continue
        if settings.chain_start(k):
            previous = None
        path = folder / f"keyframe_{k:04d}.safetensors" if folder is not None else None
        if path is not None and path.is_file():
            ws, _, _ = load_wplus(path)
            codes.append(ws[:1].float())
            previous = codes[-1]
            if on_keyframe is not None:
                on_keyframe(k, True)
            continue
        step_callback = None if callback is None else (lambda info, k=k: callback(k, info))
        result = optimize_latent(
            generator, clip, targets[k:k + 1].to(device), source_ws=source.to(device),
            init_ws=None if previous is None else previous.to(device),
            target_weights=target_weights, steps=int(settings.steps if previous is None else settings.keyframe_steps),
            lr=settings.lr, lambda_sim=settings.lambda_sim, layer_weights=settings.layer_weights,
            seed=int(settings.seed) + k, callback=step_callback, should_cancel=should_cancel,
            preview_every=preview_every, return_images=False)
        code = result.ws.detach().float().cpu()[:1]
        if path is not None:
            save_wplus(path, code, generator_name, source_ws=source)
        codes.append(code)
        previous = code
        if on_keyframe is not None:
            on_keyframe(k, False)
    kept = sorted(wanted)
    return Keyframes(times=[times[k] for k in kept], codes=torch.cat(codes), source=source, generator=generator_name,
                     labels=[labels[k] for k in kept] if labels else [])
