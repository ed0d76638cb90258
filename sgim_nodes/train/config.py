"""Training settings without torch: ``TrainConfig`` and the presets, importable by ``--help`` in an instant."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..limits import MAX_SEED

DEFAULT_TEMPLATE = "{}"  # the bare label, as the paper trained (its captions were class names)
LAYOUTS = ("auto", "manifest", "vggsound", "esc50", "urbansound8k", "folders")
PAPER_TEMPERATURE = 0.07

# Feature presets. "paper": the released model's front end (44.1 kHz, 128 mels, 864 frames, 128x512
# input). "compact": a cheap front end for short clips and CPU experiments (16 kHz, 32 mels, 64 frames
# = 1.02 s, 32x64 input); an encoder records its preset, so evaluation and inference follow it.
FEATURE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "compact": {"sample_rate": 16000, "n_mels": 32, "n_fft": 512, "hop_length": 256, "frames": 64,
                "image_height": 64, "image_width": 32},
}


@dataclass
class TrainConfig:
    """Everything a run depends on (also written into the checkpoint and the run folder)."""

    data: str
    clip: str
    out: str
    clip_model: str | None = None
    clip_config: str | None = None  # a custom open_clip model config (JSON); its file stem names the model
    layout: str = "auto"
    audio_dir: str | None = None
    split: str | None = None  # e.g. "train"; None: every row
    folds: list[int] | None = None
    classes: str | None = None  # optional class-names file: labels outside it are an error
    run_dir: str | None = None  # checkpoints and log; default <out without suffix>_run
    backbone: str = "resnet18"
    features: str = "paper"
    frames: int | None = None  # override the preset's window length in frames
    epochs: int = 50
    batch_size: int = 32  # per process
    accum_steps: int = 1
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    cycle_epochs: float = 10.0
    min_lr_ratio: float = 0.01
    temperature: float = PAPER_TEMPERATURE
    learnable_temperature: bool = False
    text_weight: float = 1.0
    image_weight: float = 1.0
    self_weight: float = 1.0
    template: str = DEFAULT_TEMPLATE
    text_variants: int = 4
    text_aug_prob: float = 0.3
    spec_augment: bool = True
    random_pad: bool = False
    workers: int = 0
    cache_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = False
    overwrite: bool = False  # start over in a run folder that holds an earlier run (else refused)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # CUDA only
    sync_batchnorm: bool = False
    max_bad_fraction: float = 0.05
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests)
    recompute_text: bool = False  # encode captions with CLIP every batch, as the released code did (benchmark)
    progress: bool = True
    tensorboard: bool = False

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        out = Path(self.out)
        return out.with_name(out.stem + "_run")

    def feature_settings(self):
        from ..audio.features import FeatureSettings

        if self.features not in FEATURE_PRESETS:
            raise ParameterError(f"features: expected one of {', '.join(FEATURE_PRESETS)}, got {self.features!r}")
        values = dict(FEATURE_PRESETS[self.features])
        if self.frames is not None:
            values["frames"] = int(self.frames)
        return FeatureSettings(**values)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"),
            (self.batch_size >= 2, "batch_size", "an integer >= 2 (a contrastive batch needs negatives)"),
            (self.accum_steps >= 1, "accum_steps", "an integer >= 1"),
            (self.optimizer in ("sgd", "adamw"), "optimizer", "'sgd' or 'adamw'"),
            (0 < self.temperature <= 10, "temperature", "a number in (0, 10]"),
            (0 <= self.text_aug_prob <= 1, "text_aug_prob", "a probability in [0, 1]"),
            (self.text_variants >= 1, "text_variants", "an integer >= 1"),
            (0 <= self.max_bad_fraction <= 1, "max_bad_fraction", "a fraction in [0, 1]"),
            (self.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1"),
            (0 <= self.seed <= MAX_SEED, "seed", f"an integer from 0 to {MAX_SEED}"),
            (self.cycle_epochs > 0, "cycle_epochs", "a positive number"),
            ("{}" in self.template, "template", "a text containing '{}' where the label goes"),
            (min(self.text_weight, self.image_weight, self.self_weight) >= 0, "loss weights", "non-negative"),
            (self.text_weight + self.image_weight + self.self_weight > 0, "loss weights", "not all zero"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ParameterError(f"{name}: expected {expected}, got {getattr(self, name, '?')!r}",
                                     parameter=name if name != "loss weights" else None)
        from ..limits import MAX_LR, check_float

        # finite and bounded: "lr > 0" alone lets inf through, and a huge lr turns the weights to NaN
        check_float("lr", self.lr, 0.0, MAX_LR, exclusive_minimum=True, what="a learning rate")
        check_float("cycle_epochs", self.cycle_epochs, 0.0, 1e6, exclusive_minimum=True)
        for name, high in (("momentum", 1.0), ("min_lr_ratio", 1.0), ("weight_decay", 1.0)):
            if hasattr(self, name):
                check_float(name, getattr(self, name), 0.0, high)
