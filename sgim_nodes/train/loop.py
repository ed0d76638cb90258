"""The training loop: one process or many (torchrun), exact resume, atomic checkpoints, CSV log.

Optimiser (paper defaults): SGD, lr 1e-3, momentum 0.9, weight decay 1e-4, 50 epochs. The paper's
"cosine cyclic" schedule is implemented as ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``
stepped once per optimiser step, with cycles of ``cycle_epochs`` epochs (default 10, so 5 cycles in
50 epochs), each going from ``lr`` down to ``lr * min_lr_ratio`` (default 0.01) before restarting.
``optimizer="adamw"`` uses AdamW with the same schedule. The logit scale (when learnable) gets no
weight decay.

Distributed: launched by ``torchrun --nproc-per-node N -m sgim_nodes.train ...`` (several machines:
the usual ``--nnodes/--rdzv-*`` options). Backend NCCL on CUDA, gloo on CPU. ``batch_size`` is per
process; the global batch is ``batch_size * world_size`` and ``data.EpochBatchSampler`` gives the
processes disjoint slices of exactly the batches a single process with the global batch would see.
Negatives are all-gathered (``losses.gather_with_grad``), so the loss and its gradient are those of
the global batch. BatchNorm statistics are per process unless ``sync_batchnorm`` is set (CUDA only:
torch's SyncBatchNorm does not run on CPU), so CPU multi-process weights match a single process with
the global batch only up to those statistics. Gradient accumulation (``accum_steps``) sums gradients of
micro-batches; each micro-batch's contrastive negatives are its own clips (not the accumulated batch).
The two views of a clip (plain and SpecAugmented) go through the encoder in one batch.

Exact resume: every ``checkpoint_every`` optimiser steps rank 0 writes ``<run_dir>/checkpoint.pt``
atomically (``fileio.atomic_path``): model, loss (temperature), optimizer, scheduler, AMP scaler,
epoch and position in the epoch, the bad-file list, and the Python/numpy/torch RNG states. Every
random draw of the data pipeline depends only on (seed, epoch, index) and the DataLoader gets its
own generator, so ``resume=True`` replays the rest of the run exactly: on CPU the final weights are
bit-identical to an uninterrupted run with the same seed and settings. Every process reads the
checkpoint on resume, so with several machines the run folder must be on a shared file system.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AudioError, ModelFileError, NonFiniteError, ParameterError
from ..limits import short_repr
from .data import (AudioTextDataset, EpochBatchSampler, build_targets, check_labels, collate,
                   embed_images, read_classes_file, read_dataset, select)
from .config import TrainConfig  # noqa: F401  (re-exported: loop.TrainConfig)
from .losses import ContrastiveLoss

log = logging.getLogger("sgim.train")

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
LOG_COLUMNS = ["step", "epoch", "lr", "loss", "loss_text", "loss_self", "loss_image", "logit_scale",
               "samples", "samples_per_s", "bad_files"]  # samples: clips in the step over all processes

class ContrastiveModel(nn.Module):
    """Encoder + loss in one module, so DDP synchronises the (learnable) temperature as well."""

    def __init__(self, encoder: nn.Module, criterion: ContrastiveLoss):
        super().__init__()
        self.encoder = encoder
        self.criterion = criterion

    def forward(self, audio, audio_aug, text, text_ids, image=None, image_ids=None):
        n = audio.shape[0]
        needs_aug = audio_aug is not None and self.criterion.weights["self"] > 0
        # One pass over both views: half the kernel launches, and identical BatchNorm statistics.
        embeddings = self.encoder(torch.cat([audio, audio_aug]) if needs_aug else audio).float()
        return self.criterion(embeddings[:n], text, text_ids, embeddings[n:] if needs_aug else None, image, image_ids)


# ------------------------------------------------------------------------------------------ helpers

@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Read torchrun's environment; start the process group (NCCL on CUDA, gloo on CPU)."""
    from ..device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), resolve_device(device_name)
    import torch.distributed as dist

    dist_info = Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist_info, device


def random_state() -> dict:
    """Python, numpy and torch global RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    import numpy as np

    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy_keys": torch.from_numpy(keys.astype("int64")),
             "numpy_rest": [int(pos), int(has_gauss), float(cached)], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    from ..fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


CHECKPOINT_FIELDS = {  # what a checkpoint written by this loop holds, and of which type
    "model": dict, "optimizer": dict, "scheduler": dict, "scaler": dict, "rng": dict, "epoch": int,
    "batch_in_epoch": int, "step": int, "global_batch": int, "seed": int, "dataset_size": int,
    "bad_indices": torch.Tensor, "bad_paths": str,
}


def _check_outputs(cfg: TrainConfig, run_dir: Path, checkpoint_path: Path) -> None:
    """Before any work: the encoder file, the run folder and the checkpoint can be written."""
    from ..fileio import check_output_file

    check_output_file(cfg.out, "out")
    if run_dir.exists() and not run_dir.is_dir():
        raise ParameterError(f"run_dir: {run_dir} is a file; the run folder must be a folder", parameter="run_dir")
    if checkpoint_path.exists() and not checkpoint_path.is_file():
        raise ModelFileError(f"{checkpoint_path}: is a folder, not a training checkpoint; move it away "
                             "(the run writes its checkpoint there)")


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint of this loop, its fields and types checked (a foreign or damaged file is a
    :class:`ModelFileError` naming what is wrong, never a KeyError later)."""
    from ..errors import torch_message
    from ..safe_pickle import check_torch_file

    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a training checkpoint; move it away to start afresh")
    check_torch_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: say which
        raise ModelFileError(f"{path}: not a readable training checkpoint ({torch_message(exc)})") from None
    from ..limits import check_file_claims

    check_file_claims(path, state)
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: not a training checkpoint of this trainer (it holds a {type(state).__name__})")
    missing = [k for k in CHECKPOINT_FIELDS if k not in state]
    wrong = [k for k, kind in CHECKPOINT_FIELDS.items()
             if k in state and (not isinstance(state[k], kind) or isinstance(state[k], bool))]
    if missing or wrong:
        raise ModelFileError(f"{path}: not a training checkpoint of this trainer ("
                             + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                     f"wrong type for {wrong}" if wrong else "") if p) + ")")
    return state


def make_optimizer(cfg: TrainConfig, model: ContrastiveModel) -> torch.optim.Optimizer:
    decay = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    scale_params = [p for p in model.criterion.parameters() if p.requires_grad]
    if scale_params:
        groups.append({"params": scale_params, "weight_decay": 0.0})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


class CsvLog:
    """``log.csv`` in the run folder; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_COLUMNS).writerow({k: row.get(k, "") for k in LOG_COLUMNS})


def _tensorboard_writer(cfg: TrainConfig, run_dir: Path):
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard is not installed (pip install tensorboard); logging to CSV only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


@dataclass
class FrozenTargets:
    """What the frozen CLIP contributes: embeddings of every caption variant and image, computed once."""

    table: Any  # data.TextTable
    caption_ids: list[int]
    image_ids: list[int]
    text: torch.Tensor
    image: torch.Tensor | None
    clip_name: str
    embed_dim: int
    clip: Any = None  # kept only when captions are re-encoded every batch (benchmark)


def frozen_targets(cfg: TrainConfig, samples, device: torch.device) -> FrozenTargets:
    from ..clip import load_clip

    clip = load_clip(cfg.clip, cfg.clip_model, device=device, config=cfg.clip_config or None)
    table, caption_ids, image_paths, image_ids = build_targets(samples, cfg.template, cfg.text_variants, cfg.seed)
    text = table.embed(clip, cache_dir=cfg.cache_dir, clip_path=cfg.clip).to(device)
    image = embed_images(clip, image_paths, cfg.cache_dir, cfg.clip).to(device) if image_paths else None
    log.info("embedded %d caption variants of %d captions and %d images", len(table.texts), len(table.captions),
             len(image_paths))
    return FrozenTargets(table, caption_ids, image_ids, text, image, clip.name, int(clip.embed_dim),
                         clip if cfg.recompute_text else None)


# -------------------------------------------------------------------------------------------- train

def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the exported encoder path (written by rank 0)."""
    from ..audio.encoder import build_audio_encoder, save_audio_encoder

    cfg.validate()
    settings = cfg.feature_settings()
    dist_info, device = init_distributed(cfg.device)
    run_dir = cfg.resolved_run_dir()
    checkpoint_path = run_dir / CHECKPOINT_NAME
    _check_outputs(cfg, run_dir, checkpoint_path)
    earlier = [run_dir / name for name in (CHECKPOINT_NAME, LOG_NAME) if (run_dir / name).is_file()]
    if earlier and not cfg.resume:
        if not cfg.overwrite:  # a finished or partial run is somebody's work: never replace it silently
            raise ParameterError(f"run_dir: {run_dir} already holds a run ({', '.join(p.name for p in earlier)}); "
                                 "pass --resume to continue it, --overwrite to start over in it, or another "
                                 "--run-dir / --out", parameter="run_dir")
        if dist_info.is_main:
            for path in earlier:
                path.unlink()
    torch.manual_seed(cfg.seed)  # model init: identical on every rank (DDP also broadcasts rank 0's weights)

    samples, layout = read_dataset(cfg.data, cfg.layout, cfg.audio_dir)
    samples = select(samples, cfg.split, cfg.folds)
    if cfg.classes:
        check_labels(samples, read_classes_file(cfg.classes))
    log.info("dataset %s (%s): %d clips", cfg.data, layout, len(samples))

    targets = frozen_targets(cfg, samples, device)
    table, text_embeddings, image_embeddings = targets.table, targets.text, targets.image
    clip, clip_name = targets.clip, targets.clip_name
    dataset = AudioTextDataset(samples, targets.caption_ids, table.variant_rows, targets.image_ids, settings=settings,
                               seed=cfg.seed, text_aug_prob=cfg.text_aug_prob, spec_augment=cfg.spec_augment,
                               random_pad=cfg.random_pad, cache_dir=cfg.cache_dir)
    encoder = build_audio_encoder(cfg.backbone, targets.embed_dim, clip_name, settings, device=device)
    encoder.config["prompt_template"] = cfg.template
    criterion = ContrastiveLoss(cfg.text_weight, cfg.image_weight, cfg.self_weight, cfg.temperature,
                                cfg.learnable_temperature)
    model = ContrastiveModel(encoder, criterion).to(device)
    if cfg.sync_batchnorm and dist_info.enabled and device.type != "cuda":
        raise ParameterError("sync_batchnorm: torch's SyncBatchNorm needs CUDA; on CPU each process keeps its own "
                             "BatchNorm statistics (leave the option off)")
    if cfg.sync_batchnorm and dist_info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    optimizer = make_optimizer(cfg, model)

    global_batch = cfg.batch_size * dist_info.world_size
    batches_per_epoch = len(samples) // global_batch
    steps_per_epoch = batches_per_epoch // cfg.accum_steps
    if steps_per_epoch < 1:
        raise ParameterError(f"batch_size/accum_steps: one optimiser step needs {global_batch * cfg.accum_steps} "
                             f"clips, the dataset has {len(samples)}")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, round(cfg.cycle_epochs * steps_per_epoch)), eta_min=cfg.lr * cfg.min_lr_ratio)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    epoch, batch_in_epoch, step, bad = 0, 0, 0, {}
    if cfg.resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if state["global_batch"] != global_batch or state["seed"] != cfg.seed or state["dataset_size"] != len(samples):
            raise ParameterError(
                f"{checkpoint_path}: cannot resume: the checkpoint was made with global batch {state['global_batch']}, "
                f"seed {state['seed']}, {state['dataset_size']} clips; this run has {global_batch}, {cfg.seed}, "
                f"{len(samples)}")
        _check_resumed_schedule(state, scheduler, cfg, checkpoint_path)
        _check_resumed_position(state, cfg, steps_per_epoch, checkpoint_path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_random_state(state["rng"])
            bad = {int(i): str(p) for i, p in zip(state["bad_indices"], json.loads(state["bad_paths"]))}
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise ModelFileError(f"{checkpoint_path}: cannot resume: the checkpoint does not fit this run's "
                                 f"model and settings ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                                 ) from None
        epoch, batch_in_epoch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        log.info("resumed from %s at step %d (epoch %d, batch %d)", checkpoint_path, step, epoch, batch_in_epoch)
    elif cfg.resume:
        log.info("no checkpoint in %s: starting from scratch", run_dir)

    train_model: nn.Module = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    if dist_info.is_main:  # created only now: a run that fails while preparing leaves no empty folder behind
        run_dir.mkdir(parents=True, exist_ok=True)
    csv_log = CsvLog(run_dir / LOG_NAME, step if cfg.resume else None) if dist_info.is_main else None
    writer = _tensorboard_writer(cfg, run_dir) if dist_info.is_main else None
    progress = None
    if dist_info.is_main and cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, desc="train", unit="step", file=sys.stderr)

    def checkpoint() -> None:
        if not dist_info.is_main:
            return
        _check_finite_training(model, step, cfg, checkpoint_path)  # the last good checkpoint is never replaced by NaN
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": random_state(), "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "step": step, "global_batch": global_batch, "seed": cfg.seed, "dataset_size": len(samples),
            "bad_indices": torch.tensor(sorted(bad), dtype=torch.long), "bad_paths": json.dumps([bad[i] for i in sorted(bad)]),
            "config": json.dumps(dataclasses.asdict(cfg))})

    micro_in_step, window_samples, window_start = 0, 0, time.perf_counter()
    parts_sum: dict[str, tuple[float, int]] = {}
    loss_sum = 0.0
    sampler = EpochBatchSampler(len(samples), cfg.batch_size, seed=cfg.seed, rank=dist_info.rank,
                                world_size=dist_info.world_size, stop_batch=steps_per_epoch * cfg.accum_steps)
    # Its own generator: creating iterators must not touch the global RNG. Persistent workers keep
    # their in-memory spectrogram cache from one epoch to the next.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(cfg.seed),
                                         persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    while step < total_steps and epoch < cfg.epochs:
        sampler.epoch, sampler.start_batch = epoch, batch_in_epoch
        for batch in loader:
            for item in batch["bad"]:
                if item.index not in bad:
                    bad[item.index] = item.path
                    log.warning("skipping unreadable audio %s: %s", item.path, item.reason)
            if len(bad) > cfg.max_bad_fraction * len(samples):
                raise AudioError(f"{len(bad)} of {len(samples)} audio files are unreadable or empty (more than "
                                 f"max_bad_fraction={cfg.max_bad_fraction}); first: {next(iter(bad.values()))}")
            batch_in_epoch += 1
            micro_in_step += 1
            last_micro = micro_in_step == cfg.accum_steps
            global_size = _global_batch_size(batch, dist_info, device)
            if global_size:
                audio = batch["audio"].to(device, non_blocking=True)
                audio_aug = batch["audio_aug"].to(device, non_blocking=True)
                if cfg.recompute_text:
                    text = clip.encode_text([table.texts[i] for i in batch["text_row"].tolist()])
                else:
                    text = text_embeddings[batch["text_row"].to(device)]
                image_ids = batch["image_id"].to(device)
                image = image_embeddings[image_ids.clamp(min=0)] if image_embeddings is not None else None
                sync_context = train_model.no_sync() if dist_info.enabled and not last_micro else _null_context()
                with sync_context:
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                        loss, parts = train_model(audio, audio_aug, text, batch["caption_id"].to(device), image,
                                                  image_ids if image is not None else None)
                    scaler.scale(loss / cfg.accum_steps).backward()
                loss_sum += float(loss.detach())
                for k, v in parts.items():  # a term can be absent from a micro-batch (e.g. < 2 images)
                    total_, count_ = parts_sum.get(k, (0.0, 0))
                    parts_sum[k] = (total_ + v, count_ + 1)
                window_samples += global_size
            if not last_micro:
                continue
            micro_in_step = 0
            if window_samples:  # else every micro-batch was unusable: no gradient, keep the schedule moving
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if not use_amp and not math.isfinite(loss_sum):  # AMP's scaler skips overflowing steps itself
                raise NonFiniteError(f"loss: training went non-finite at step {step} (loss {loss_sum / cfg.accum_steps})"
                                     f"; lower --lr (now {cfg.lr:g}). {_kept_checkpoint(checkpoint_path)}",
                                     parameter="lr")
            _check_finite_training(model, step, cfg, checkpoint_path)
            step_epoch = epoch
            if batch_in_epoch >= steps_per_epoch * cfg.accum_steps:
                epoch, batch_in_epoch = epoch + 1, 0
            if dist_info.is_main:
                elapsed = time.perf_counter() - window_start
                row = {"step": step, "epoch": step_epoch, "lr": optimizer.param_groups[0]["lr"],
                       "loss": loss_sum / cfg.accum_steps,
                       "logit_scale": float(model.criterion.logit_scale().detach()), "bad_files": len(bad),
                       "samples": window_samples, "samples_per_s": window_samples / elapsed if elapsed > 0 else 0.0}
                row.update({f"loss_{k}": total_ / count_ for k, (total_, count_) in parts_sum.items()})
                csv_log.write(row)
                if writer is not None:
                    for k in ("loss", "lr", "logit_scale", "samples_per_s"):
                        writer.add_scalar(k, row[k], step)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{row['loss']:.3f}", epoch=epoch)
            loss_sum, parts_sum, window_samples, window_start = 0.0, {}, 0, time.perf_counter()
            if step % cfg.checkpoint_every == 0 or step == total_steps:
                checkpoint()
            if step >= total_steps or batch_in_epoch == 0:
                break  # epoch done (a new sampler) or run done
        else:  # the sampler had nothing left in this epoch
            epoch, batch_in_epoch = epoch + 1, 0
    if progress is not None:
        progress.close()
    if writer is not None:
        writer.close()
    out = Path(cfg.out)
    if dist_info.is_main:
        if bad:
            log.warning("%d unreadable audio file(s) were skipped (listed in %s)", len(bad), run_dir / "bad_files.txt")
            (run_dir / "bad_files.txt").write_text("".join(f"{bad[i]}\n" for i in sorted(bad)), encoding="utf-8")
        model.encoder.eval()
        save_audio_encoder(model.encoder, out, clip_model=clip_name)
        log.info("wrote %s after %d steps", out, step)
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return out


def _kept_checkpoint(path: Path) -> str:
    return (f"The last good checkpoint {path} is kept (resume from it with --resume)." if path.is_file()
            else "No checkpoint was written.")


def _check_finite_training(model: nn.Module, step: int, cfg: TrainConfig, checkpoint_path: Path) -> None:
    """Stop a run whose weights went NaN/inf: nothing after this step could be right, and a checkpoint of
    them would replace the last good one. Checked after every step (every rank holds the same weights)."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"lr: training went non-finite at step {step} (weight '{name}'); lower --lr (now "
                                 f"{cfg.lr:g}). {_kept_checkpoint(checkpoint_path)}", parameter="lr")


def _check_resumed_position(state: dict, cfg: TrainConfig, steps_per_epoch: int, path: Path) -> None:
    """Where a checkpoint says the run stands must be a place in this run: a negative epoch would train
    for ever, a huge batch index would skip the data."""
    batches = steps_per_epoch * cfg.accum_steps
    for key, high in (("epoch", cfg.epochs), ("batch_in_epoch", batches), ("step", cfg.epochs * steps_per_epoch)):
        if not 0 <= state[key] <= high:
            raise ModelFileError(f"{path}: cannot resume: '{key}' is {short_repr(state[key])}, outside this run "
                                 f"(0 to {high})")


def _check_resumed_schedule(state: dict, scheduler, cfg: TrainConfig, path: Path) -> None:
    """The scheduler and optimiser fields of a checkpoint, before they are loaded: the same fields and types
    as this run's own, finite, and the cycle this run's settings give (``load_state_dict`` takes any dict,
    and a hostile ``T_0`` or ``base_lrs`` would fail only mid-run, raw)."""
    import numbers

    from ..limits import MAX_LR

    ours, theirs = scheduler.state_dict(), state["scheduler"]

    def refuse(detail: str):
        raise ModelFileError(f"{path}: cannot resume: the checkpoint's learning-rate schedule is invalid ({detail})")

    if set(theirs) != set(ours):
        refuse(f"fields {sorted(map(str, set(theirs) ^ set(ours)))[:5]} differ from this trainer's")
    for key, value in ours.items():
        found = theirs[key]
        if isinstance(value, bool) or value is None:
            if not (isinstance(found, bool) or found is None):
                refuse(f"'{key}' should be true/false")
        elif isinstance(value, numbers.Real):
            if isinstance(found, bool) or not isinstance(found, numbers.Real) or not math.isfinite(found) \
                    or abs(found) > 1e12:
                refuse(f"'{key}' should be a finite number, found {type(found).__name__}")
        elif isinstance(value, list):
            if not isinstance(found, list) or len(found) != len(value) or not all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_LR
                    for v in found):
                refuse(f"'{key}' should be {len(value)} learning rates in [0, {MAX_LR:g}]")
    for key in ("T_0", "T_mult", "eta_min", "base_lrs"):  # fixed by this run's settings
        if theirs[key] != ours[key] and not (isinstance(ours[key], float) and math.isclose(theirs[key], ours[key])):
            refuse(f"'{key}' is {theirs[key]!r}, this run's settings give {ours[key]!r} (another --lr, "
                   "--cycle-epochs or --min-lr-ratio?)")
    if not 0 <= theirs["T_cur"] <= theirs["T_i"] or not 1 <= theirs["T_i"] <= 1e9:
        refuse(f"T_cur {theirs['T_cur']} / T_i {theirs['T_i']} out of range")
    groups = state["optimizer"].get("param_groups") if isinstance(state["optimizer"], dict) else None
    if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("lr"), numbers.Real) and math.isfinite(g["lr"])
            and 0 <= g["lr"] <= MAX_LR for g in groups):
        raise ModelFileError(f"{path}: cannot resume: the optimiser's learning rates are missing, non-finite or "
                             f"beyond {MAX_LR:g}")


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _global_batch_size(batch: dict, dist_info: Distributed, device: torch.device) -> int:
    """Clips in this micro-batch over all ranks, or 0 when it must be skipped: a rank with fewer than
    2 readable clips (all ranks must run the same collectives, so all skip together)."""
    size = batch["size"]
    if not dist_info.enabled:
        return size if size >= 2 else 0
    import torch.distributed as dist

    counts = torch.tensor([size, 1 if size >= 2 else 0], device=device)
    dist.all_reduce(counts)
    return int(counts[0]) if int(counts[1]) == dist_info.world_size else 0
