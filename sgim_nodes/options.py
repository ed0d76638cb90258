"""One table of the numeric options that the library, the command line and the nodes share.

Each row gives an option's type, default, bounds, widget step and help. The adapters turn a row into
what each front end needs: :func:`flag` the argparse keywords of a command-line flag (the value is
checked while the command line is parsed, so before any model is looked up), :func:`node_input` a
ComfyUI input spec (tooltip = help), and :func:`check` the library's own check (the error names the
parameter; the command line shows the flag instead, see ``errors.with_flags``).

Rows are keyed ``"<job>.<name>"`` where one name means different things in different jobs (steps of an
edit, of a projection, of the first keyframe) and plain ``"<name>"`` where it means one thing. The
bounds are the wider of what the nodes and the command line took before they shared this table.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from . import limits
from .animate import defaults as music
from .errors import ParameterError, SGIMError
from .project.options import TUNE_LR


@dataclass(frozen=True)
class Option:
    kind: type  # int or float
    default: Any
    minimum: float
    maximum: float
    help: str
    step: float | None = None  # widget step (ComfyUI)
    round: float | None = None  # widget rounding (ComfyUI), for steps finer than the default precision
    what: str = ""  # what the value is, for error messages ("a learning rate")

    def check(self, name: str, value: Any):
        if self.kind is int:
            return limits.check_int(name, value, int(self.minimum), int(self.maximum), self.what)
        return limits.check_float(name, value, self.minimum, self.maximum, what=self.what)


def _i(default, low, high, help, what="", step=None):
    return Option(int, default, low, high, help, step=step, what=what)


def _f(default, low, high, step, help, what="", round=None):
    return Option(float, default, low, high, help, step=step, round=round, what=what)


_LR, _WEIGHT = "a learning rate", "a loss weight"
_SECONDS, _DAY = "seconds", 86400.0

OPTIONS: dict[str, Option] = {
    # edits: Optimize Latent, `edit`
    "steps": _i(300, 1, limits.MAX_STEPS, "Adam steps (paper: 300).", "a number of steps"),
    "lr": _f(0.1, 0.0001, limits.MAX_LR, 0.005, "Learning rate (paper: 0.1 for landscapes, 0.05 for faces).", _LR,
             round=0.0001),
    "lambda_sim": _f(0.002, 0.0, limits.MAX_LOSS_WEIGHT, 0.001, "How strongly the code stays near the source "
                     "(paper: 0.002 landscapes, 0.008 faces).", _WEIGHT, round=0.0001),
    "lambda_id": _f(0.0, 0.0, limits.MAX_LOSS_WEIGHT, 0.001, "Identity loss weight for faces (paper: 0.005); needs "
                    "identity_model. 0 skips it.", _WEIGHT, round=0.0001),
    "preview_every": _i(10, 0, limits.MAX_STEPS, "Show a preview image every N steps (0 = none)."),
    "truncation": _f(0.7, 0.0, limits.MAX_TRUNCATION, 0.05, "Pull toward the average image: 1 = no truncation, "
                     "smaller = more typical (paper: 0.7)."),
    "batch": _i(1, 1, limits.MAX_BATCH, "Number of source images.", "a batch size"),
    # instant edits
    "alpha": _f(1.0, -100.0, 100.0, 0.05, "Strength: 1 moves the code by one typical W+ row spread (space 'style': "
                "standard deviations of the most relevant channel, try 3-6). Negative: away from the target.",
                "a strength"),
    "beta": _f(0.1, 0.0, 0.999, 0.01, "Use only style channels whose relevance to the target (a cosine) is at least "
               "this: larger = fewer channels, a more focused edit.", "a relevance threshold in [0, 1)"),
    # parts of a sound
    "start": _f(0.0, 0.0, _DAY, 0.1, "Ignore the sound before this time.", _SECONDS),
    "end": _f(0.0, 0.0, _DAY, 0.1, "Ignore the sound after this time (0 = until the end).", _SECONDS),
    "hop_seconds": _f(0.0, 0.0, 3600.0, 0.5, "Step between analysis windows for sounds longer than one window (0 = "
                      "the window length, no overlap). The paper uses only the first window of each clip.", _SECONDS),
    "target_weight": _f(1.0, 0.0, 10.0, 0.05, "Weight of this target.", "a weight"),
    # music video: Audio Features .. Decode Frames, `animate`
    "fps": _f(24.0, 1.0, 120.0, 0.01, "Frames per second of the video (29.97 works).", "a frame rate", round=0.001),
    "smoothing": _f(music.DEFAULT_SMOOTHING, 0.0, 10.0, 0.01, "Width of the centred smoothing window in seconds "
                    "(0 = none); larger = calmer motion.", _SECONDS),
    "keyframe_seconds": _f(music.DEFAULT_KEYFRAME_SECONDS, 0.25, 600.0, 0.25, "Time between keyframes.", _SECONDS),
    "music.steps": _i(music.DEFAULT_STEPS, 1, limits.MAX_STEPS, "Optimiser steps of the first keyframe.",
                      "a number of steps"),
    "keyframe_steps": _i(music.DEFAULT_KEYFRAME_STEPS, 1, limits.MAX_STEPS, "Steps of each later keyframe (it starts "
                         "from the previous keyframe's code).", "a number of steps"),
    "music.lambda_sim": _f(0.002, 0.0, limits.MAX_LOSS_WEIGHT, 0.001, "How strongly every keyframe stays near the "
                           "source.", _WEIGHT, round=0.0001),
    "text_weight": _f(0.3, 0.0, 1.0, 0.05, "Weight of the prompt against the sound (0 = sound only).", "a weight"),
    "follow_seconds": _f(0.25, 0.0, 60.0, 0.05, "instant: time between followed moments (0 = every frame).", _SECONDS),
    "reactivity": _f(music.DEFAULT_REACTIVITY, 0.0, 5.0, 0.05, "How much the image pulses with the music: the "
                     "displacement from the source grows by up to this factor on loud beats (0 = a smooth path "
                     "only).", "a reactivity"),
    "rotation_degrees": _f(music.DEFAULT_ROTATION_DEGREES, 0.0, 180.0, 0.5, "StyleGAN3 only: largest rotation, "
                           "following the loudness.", "an angle in degrees"),
    "translation": _f(music.DEFAULT_TRANSLATION, 0.0, 2.0, 0.01, "StyleGAN3 only: largest shift, following "
                      "brightness (x) and bass (y).", "a shift"),
    "frame_offset": _i(0, 0, 10_000_000, "First frame of this chunk (render a long song in parts)."),
    "frame_count": _i(0, 0, 10_000_000, "Frames in this chunk (0 = up to the end)."),
    "frame_batch": _i(music.DEFAULT_BATCH, 1, 256, "Frames rendered at once (more is faster on a GPU, needs more "
                      "memory).", "a batch size"),
    "bpm": _f(0.0, 0.0, 600.0, 0.1, "Manual tempo in beats per minute (0 = detect).", "a tempo"),
    "beats_per_bar": _i(4, 1, 64, "Beats in a bar (bars:N keyframes).", "a number of beats"),
    "beat_weight": _f(0.0, 0.0, 1.0, 0.05, "Share of the pulsing that follows the beats instead of loudness and "
                      "onsets.", "a share"),
    "chain_length": _i(0, 0, 1_000_000, "Restart the keyframe chain every N keyframes (0: one chain); independent "
                       "chains are shared by torchrun's processes.", "a number of keyframes"),
    "crf": _i(18, 0, 51, "H.264 quality (0 lossless .. 51; 18 looks lossless).", "an H.264 quality"),
    "segment_seconds": _f(10.0, 0.1, 3600.0, 0.5, "Length of the independently encoded pieces (resume and "
                          "torchrun granularity).", _SECONDS),
    "size": _i(0, 0, 8192, "Scale the frames to this many pixels (0 = the generator's resolution).", step=2),
    # projection: Project Image, `project`
    "project.steps": _i(1000, 1, limits.MAX_STEPS, "Projection steps: half in W, then W+ (NVlabs: 1000).",
                        "a number of steps"),
    "tune_steps": _i(350, 0, limits.MAX_STEPS, "Pivotal tuning steps on a copy of the generator (PTI: 350); "
                     "0 = no tuning.", "a number of steps"),
    "project.lr": _f(0.1, 0.0001, limits.MAX_LR, 0.005, "Peak learning rate in W (NVlabs: 0.1); W+ uses half of it.",
                     _LR, round=0.0001),
    "project.wplus_lr": _f(None, 0.0001, limits.MAX_LR, 0.005, "Peak learning rate in W+ (default: half of the "
                           "one in W).", _LR),
    "w_fraction": _f(0.5, 0.0, 1.0, 0.05, "Share of the steps spent in W.", "a share"),
    "tune_lr": _f(TUNE_LR, 0.0, limits.MAX_LR, 0.0001, "Tuning learning rate.", _LR),
    "pixel_weight": _f(0.0, 0.0, 100.0, 0.1, "Add this much pixel error to the distance (holds colours; tuning "
                       "always adds 1).", _WEIGHT),
}


# Node inputs named otherwise than their row (the names are kept: saved workflows carry them).
ALIASES = {"start_seconds": "start", "end_seconds": "end", "smoothing_seconds": "smoothing",
           "truncation_psi": "truncation", "batch_size": "batch", "music.batch_size": "frame_batch",
           "weight_a": "target_weight", "weight_b": "target_weight", "weight_c": "target_weight"}


# Fields of the music-video job (sgim_nodes.jobs.music_render) -> their row.
MUSIC_RENDER_FIELDS = {
    "fps": "fps", "start": "start", "end": "end", "size": "size", "text_weight": "text_weight",
    "keyframe_seconds": "keyframe_seconds", "beats_per_bar": "beats_per_bar", "chain_length": "chain_length",
    "steps": "music.steps", "keyframe_steps": "keyframe_steps", "lr": "lr", "lambda_sim": "music.lambda_sim",
    "truncation": "truncation", "reactivity": "reactivity", "beat_weight": "beat_weight", "smoothing": "smoothing",
    "rotation_degrees": "rotation_degrees", "translation": "translation", "batch": "frame_batch", "crf": "crf",
    "segment_seconds": "segment_seconds", "follow_seconds": "follow_seconds", "alpha": "alpha", "beta": "beta",
}


# Fields of the edit and projection jobs (sgim_nodes.jobs.edit / .project) -> their row.
EDIT_FIELDS = {"steps": "steps", "lr": "lr", "lambda_sim": "lambda_sim", "lambda_id": "lambda_id",
               "truncation": "truncation", "preview_every": "preview_every"}
PROJECT_FIELDS = {"steps": "project.steps", "lr": "project.lr", "wplus_lr": "project.wplus_lr",
                  "w_fraction": "w_fraction", "pixel_weight": "pixel_weight", "tune_steps": "tune_steps",
                  "tune_lr": "tune_lr", "preview_every": "preview_every"}


def option_key(name: str, job: str | None = None) -> str | None:
    """The row of ``name`` in ``job``: ``"<job>.<name>"``, ``name``, or an alias of either; None if none."""
    for candidate in (f"{job}.{name}", name):
        if candidate in OPTIONS:
            return candidate
        if candidate in ALIASES:
            return ALIASES[candidate]
    return None


def option(name: str, job: str | None = None) -> Option:
    key = option_key(name, job)
    if key is None:
        raise KeyError(f"no option {name!r} (job {job!r}) in sgim_nodes.options.OPTIONS")
    return OPTIONS[key]


def node_input(name: str, job: str | None = None, **extra) -> tuple:
    """A ComfyUI input spec of the row; ``extra`` adds or replaces widget keys (e.g. a tooltip)."""
    row = option(name, job)
    spec = {"default": row.default, "min": row.minimum, "max": row.maximum, "tooltip": row.help}
    if row.kind is float:
        spec["min"], spec["max"] = float(row.minimum), float(row.maximum)
    spec.update({k: v for k, v in (("step", row.step), ("round", row.round)) if v is not None})
    spec.update(extra)
    return ("INT" if row.kind is int else "FLOAT", spec)


def node_inputs(job: str | None, *names: str, tooltips: dict[str, str] | None = None) -> dict[str, tuple]:
    """``{name: node_input(name, job)}`` in order; ``tooltips`` replaces the help of some."""
    tooltips = tooltips or {}
    return {name: node_input(name, job, **({"tooltip": tooltips[name]} if name in tooltips else {}))
            for name in names}


class FlagError(SGIMError):
    """A flag's value beyond its row (not a ValueError, so that argparse passes it on unchanged: the
    command prints it as its one-line error, as it prints every other refusal)."""


class _CheckedFlag(argparse.Action):
    """Converts and checks the value while the command line is parsed, so before any model is looked for."""

    option: Option

    def __call__(self, parser, namespace, values, option_string=None):
        row = self.option
        try:
            value = float(values) if row.kind is float else int(values, 10)
        except ValueError:
            value = values  # refused below, with the bounds
        try:
            setattr(namespace, self.dest, row.check(option_string, value))
        except ParameterError as exc:
            raise FlagError(str(exc), parameter=self.dest) from None


def flag(key: str, job: str | None = None, help: str | None = None, **extra) -> dict:
    """argparse keywords of a flag for the row: its value is checked while parsing, and a value beyond the
    row is refused naming the flag. ``extra`` (e.g. ``default=None`` where a preset decides, ``dest``) is
    passed on."""
    row = option(key, job)
    default = extra.pop("default", row.default)
    text = help if help is not None else row.help.rstrip(".")
    bounds = f"{_shown(row.minimum)}..{_shown(row.maximum)}"
    shown = "" if default is None else f", default {_shown(default)}"
    action = type("CheckedFlag", (_CheckedFlag,), {"option": row})
    return {"action": action, "default": default, "help": f"{text} ({bounds}{shown})", **extra}


def _shown(number) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e12 else f"{number:g}"


def check(key: str, value: Any, job: str | None = None, name: str | None = None):
    """``value`` within the row's bounds, else a ParameterError naming ``name`` (default: the key)."""
    return option(key, job).check(name or key, value)


def check_fields(request: Any, fields: dict[str, str]) -> None:
    """Each ``{attribute: row}`` of ``request`` that is set (not None) within its row's bounds (the error
    names the attribute)."""
    for attribute, key in fields.items():
        value = getattr(request, attribute, None)
        if value is not None:
            OPTIONS[key].check(attribute, value)
