"""Datasets for training and evaluation: readers for common layouts, features, cached CLIP targets.

Layouts (``read_dataset(path, layout="auto")``):

- ``manifest``: a CSV with a header. Columns: ``audio`` (required), ``caption`` or ``label``
  (one required; ``caption`` wins when both are present), optional ``image`` (an image or a video
  file: its middle frame is used), ``split`` (e.g. train/test) and ``fold``. Paths are relative to
  the CSV's folder.
- ``vggsound``: the VGGSound CSV (no header: YouTube id, start second, label, split) plus the folder
  holding the clips, named ``<id>_<start>.<ext>`` with the start as written or zero-padded to 6
  digits (the usual download scripts' naming).
- ``esc50``: the ESC-50 root (``meta/esc50.csv``, ``audio/``); folds 1-5, labels are categories.
- ``urbansound8k``: the UrbanSound8K root (``metadata/UrbanSound8K.csv``, ``audio/fold<k>/``).
- ``folders``: one sub-folder per class holding audio files; the folder name is the label.

Labels are turned into captions with a prompt template (``"{}"``, the bare label, by default: the
paper trained on class names; ``evaluate`` uses the template an encoder records); underscores become
spaces.

Training samples: ``AudioTextDataset`` decodes a clip and computes its dB mel spectrogram (the
paper's front end, ``sgim_nodes.audio.features``) inside DataLoader workers, keeps it in memory and
optionally in an on-disk cache (safetensors, keyed by path + mtime + size + feature settings), then
per draw crops a window (random offset when the clip is longer than the model window; short clips
are zero-padded at the start, as at inference), SpecAugments a copy and makes both model inputs.
All randomness of a draw comes from (seed, epoch, index), so runs resume exactly.

Unreadable or zero-length files do not stop a run: the dataset returns a ``BadSample`` marker, the
collate function drops it and the training loop counts and logs it (``--max-bad-fraction``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..errors import AudioError, ModelFileError, ParameterError
from .augment import spec_augment, text_variants
from .config import DEFAULT_TEMPLATE, LAYOUTS  # noqa: F401  (re-exported)


AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif", ".mp4",
                    ".mkv", ".webm")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


@dataclass
class Sample:
    """One row of a dataset. ``where`` names its origin (``file:line``) for error messages."""

    audio: Path
    label: str | None = None
    caption: str | None = None
    image: Path | None = None
    split: str | None = None
    fold: int | None = None
    where: str = ""

    def text(self, template: str = DEFAULT_TEMPLATE) -> str:
        """The caption, or the label put into ``template``."""
        if self.caption:
            return self.caption
        return template.format(self.label)


def clean_label(label: str) -> str:
    return label.replace("_", " ").strip()


# ----------------------------------------------------------------------------------------- readers

def _read_csv_rows(path: Path, required: Sequence[Sequence[str]]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header + (line number, row) pairs. ``required``: groups of alternatives, one of each needed."""
    if not path.is_file():
        raise ParameterError(f"{path}: dataset file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for alternatives in required:
            if not any(a in header for a in alternatives):
                wanted = " or ".join(repr(a) for a in alternatives)
                raise ParameterError(f"{path}: missing column {wanted} (found columns: {', '.join(header) or 'none'})")
        rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]
    return header, rows


def _int_cell(value: str, where: str, column: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ParameterError(f"{where}: column {column!r} must be an integer, got {value!r}") from None


def read_manifest(path: str | os.PathLike) -> list[Sample]:
    path = Path(path)
    header, rows = _read_csv_rows(path, [("audio",), ("caption", "label")])
    base = path.parent
    samples = []
    for line, row in rows:
        where = f"{path}:{line}"
        if not row.get("audio"):
            raise ParameterError(f"{where}: empty 'audio' cell")
        caption, label = row.get("caption", ""), row.get("label", "")
        if not caption and not label:
            raise ParameterError(f"{where}: neither 'caption' nor 'label' is filled in")
        samples.append(Sample(
            audio=base / row["audio"], label=clean_label(label) if label else None, caption=caption or None,
            image=base / row["image"] if row.get("image") else None, split=row.get("split") or None,
            fold=_int_cell(row.get("fold", ""), where, "fold"), where=where))
    return samples


def read_esc50(root: str | os.PathLike) -> list[Sample]:
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    _, rows = _read_csv_rows(meta, [("filename",), ("fold",), ("category",)])
    return [Sample(audio=root / "audio" / row["filename"], label=clean_label(row["category"]),
                   fold=_int_cell(row["fold"], f"{meta}:{line}", "fold"), where=f"{meta}:{line}")
            for line, row in rows]


def read_urbansound8k(root: str | os.PathLike) -> list[Sample]:
    root = Path(root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    _, rows = _read_csv_rows(meta, [("slice_file_name",), ("fold",), ("class",)])
    samples = []
    for line, row in rows:
        where = f"{meta}:{line}"
        fold = _int_cell(row["fold"], where, "fold")
        samples.append(Sample(audio=root / "audio" / f"fold{fold}" / row["slice_file_name"],
                              label=clean_label(row["class"]), fold=fold, where=where))
    return samples


def read_vggsound(csv_path: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[Sample]:
    """VGGSound's header-less CSV. Clips not found in ``audio_dir`` keep a non-existent path and are
    counted as bad samples by the dataset (the usual state of a partial download)."""
    csv_path = Path(csv_path)
    audio_dir = Path(audio_dir) if audio_dir else csv_path.parent
    if not csv_path.is_file():
        raise ParameterError(f"{csv_path}: dataset file not found")
    index: dict[str, Path] = {}
    if audio_dir.is_dir():
        for p in audio_dir.rglob("*"):
            if p.suffix.lower() in AUDIO_EXTENSIONS:
                index.setdefault(p.stem, p)
    samples = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            where = f"{csv_path}:{line}"
            if len(row) < 3:
                raise ParameterError(f"{where}: expected 'youtube_id,start_seconds,label[,split]', got {len(row)} column(s)")
            ytid, start, label = row[0].strip(), row[1].strip(), row[2].strip()
            start_int = _int_cell(start, where, "start_seconds")
            names = [f"{ytid}_{start}", f"{ytid}_{start_int:06d}", f"{ytid}_{start_int}"]
            path = next((index[n] for n in names if n in index), audio_dir / f"{names[1]}.wav")
            split = row[3].strip() if len(row) > 3 else None
            samples.append(Sample(audio=path, label=clean_label(label), split=split or None, where=where))
    return samples


def read_class_folders(root: str | os.PathLike) -> list[Sample]:
    root = Path(root)
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in AUDIO_EXTENSIONS:
                samples.append(Sample(audio=f, label=clean_label(folder.name), where=str(f)))
    if not samples:
        raise ParameterError(f"{root}: no audio files found in class sub-folders (expected <root>/<class>/*.wav ...)")
    return samples




def detect_layout(path: Path) -> str:
    if path.is_file():
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = next(csv.reader(f), [])
        return "manifest" if "audio" in [c.strip() for c in first] else "vggsound"
    if (path / "meta" / "esc50.csv").is_file():
        return "esc50"
    if (path / "metadata" / "UrbanSound8K.csv").is_file():
        return "urbansound8k"
    if (path / "manifest.csv").is_file():
        return "manifest"
    if path.is_dir():
        return "folders"
    raise ParameterError(f"{path}: dataset not found (expected a manifest CSV or a dataset folder)")


def read_dataset(path: str | os.PathLike, layout: str = "auto", audio_dir: str | os.PathLike | None = None
                 ) -> tuple[list[Sample], str]:
    """(samples, layout used). A folder containing ``manifest.csv`` reads that manifest."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise ParameterError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "auto":
        layout = detect_layout(path)
    if layout == "manifest":
        samples = read_manifest(path / "manifest.csv" if path.is_dir() else path)
    elif layout == "vggsound":
        samples = read_vggsound(path, audio_dir)
    elif layout == "esc50":
        samples = read_esc50(path)
    elif layout == "urbansound8k":
        samples = read_urbansound8k(path)
    else:
        samples = read_class_folders(path)
    if not samples:
        raise ParameterError(f"{path}: the dataset has no rows")
    return samples, layout


def select(samples: list[Sample], split: str | None = None, folds: Sequence[int] | None = None) -> list[Sample]:
    """Rows of one split and/or some folds; a clear error when nothing is left."""
    out = samples
    if split:
        out = [s for s in out if s.split == split]
    if folds:
        out = [s for s in out if s.fold in set(folds)]
    if not out:
        found = sorted({str(s.split) for s in samples}) if split else sorted({str(s.fold) for s in samples})
        raise ParameterError(f"no samples for split={split!r} folds={list(folds or [])} (dataset has: {', '.join(found)})")
    return out


def check_labels(samples: Sequence[Sample], classes: Sequence[str]) -> None:
    """Every labelled sample's label must be one of ``classes`` (ParameterError naming the row)."""
    known = set(classes)
    for s in samples:
        if s.label is not None and s.label not in known:
            raise ParameterError(f"{s.where}: unknown label {s.label!r} (known classes: {', '.join(sorted(known))})")


def read_classes_file(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{path}: classes file not found")
    names = [clean_label(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ParameterError(f"{path}: duplicate class names")
    return names


# ------------------------------------------------------------------------------------ audio features

def compute_mel(path: Path, settings: Any) -> torch.Tensor:
    """[n_mels, T] unit-dB mel spectrogram of a whole file (the paper's front end); AudioError if unusable."""
    from ..audio.decode import load_audio
    from ..audio.features import mel_db

    waveform, sample_rate = load_audio(path)
    if waveform.numel() == 0:
        raise AudioError(f"{path}: zero-length audio")
    return mel_db(waveform, sample_rate, settings).float()


def model_input(window: torch.Tensor, settings: Any) -> torch.Tensor:
    """[1, H, W] encoder input of one [n_mels, frames] window (the paper's resize + raw reshape)."""
    from ..audio.features import to_model_input

    return to_model_input(window, settings)[0]


class FeatureCache:
    """On-disk cache of whole-clip mel spectrograms, one small safetensors file per clip.

    The key hashes the absolute path, modification time, size and the feature settings, so an
    edited file or other settings never reuse a stale entry. Writes are atomic; concurrent
    workers writing the same entry are harmless.
    """

    KIND = "mel_cache"

    def __init__(self, folder: str | os.PathLike, settings: Any):
        self.folder = Path(folder)
        self.settings_json = json.dumps(settings.to_dict(), sort_keys=True)

    def _entry(self, path: Path) -> Path:
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{self.settings_json}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, path: Path) -> torch.Tensor | None:
        try:
            entry = self._entry(path)
        except OSError:
            return None
        if not entry.is_file():
            return None
        from ..fileio import load_model_file

        try:
            tensors, _, _ = load_model_file(entry, self.KIND)
        except ModelFileError:  # a damaged entry is recomputed and overwritten
            return None
        return tensors["mel"]

    def put(self, path: Path, mel: torch.Tensor) -> None:
        from ..fileio import save_model_file

        save_model_file(self._entry(path), {"mel": mel}, self.KIND, {"source": str(path)})


@dataclass
class BadSample:
    """Marker returned instead of a sample whose audio could not be used."""

    index: int
    path: str
    reason: str


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one draw: depends only on (seed, epoch, index)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


class AudioTextDataset(torch.utils.data.Dataset):
    """Training samples. Indexed by ``(epoch, index)`` pairs (see ``EpochBatchSampler``).

    Returns a dict: ``audio`` and ``audio_aug`` ([1, H, W] model inputs), ``text_row`` (row of the
    chosen caption variant in the text table), ``caption_id`` (the caption, for grouping duplicate
    positives), ``image_id`` (-1 without an image), ``index``; or a ``BadSample``.
    """

    def __init__(self, samples: Sequence[Sample], caption_ids: Sequence[int], variant_rows: Sequence[Sequence[int]],
                 image_ids: Sequence[int] | None = None, *, settings: Any = None, seed: int = 0,
                 text_aug_prob: float = 0.0, spec_augment: bool = True, random_pad: bool = False,
                 cache_dir: str | os.PathLike | None = None, memory_cache: bool = True):
        self.samples = list(samples)
        self.caption_ids = list(caption_ids)
        self.variant_rows = [list(v) for v in variant_rows]
        self.image_ids = list(image_ids) if image_ids is not None else [-1] * len(self.samples)
        if settings is None:
            from ..audio.features import PAPER_SETTINGS

            settings = PAPER_SETTINGS
        self.settings = settings
        self.frames = int(self.settings.frames)
        self.seed = seed
        self.text_aug_prob = text_aug_prob
        self.use_spec_augment = spec_augment
        self.random_pad = random_pad
        self.disk_cache = FeatureCache(cache_dir, self.settings) if cache_dir else None
        self.memory: dict[int, torch.Tensor] | None = {} if memory_cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def mel(self, index: int) -> torch.Tensor:
        if self.memory is not None and index in self.memory:
            return self.memory[index]
        path = self.samples[index].audio
        mel = self.disk_cache.get(path) if self.disk_cache else None
        if mel is None:
            mel = compute_mel(path, self.settings)
            if self.disk_cache:
                self.disk_cache.put(path, mel)
        if self.memory is not None:
            self.memory[index] = mel
        return mel

    def __getitem__(self, key: tuple[int, int] | int) -> dict | BadSample:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        try:
            mel = self.mel(index)
        except (AudioError, OSError) as exc:
            return BadSample(index, str(self.samples[index].audio), str(exc))
        from ..audio.features import fit_frames, random_crop_offset

        g = sample_generator(self.seed, epoch, index)
        spare = self.frames - mel.shape[1]
        if self.random_pad and spare > 0:  # the released training code's random placement of short clips
            window = torch.zeros(mel.shape[0], self.frames)
            start = int(torch.randint(0, spare + 1, (1,), generator=g))
            window[:, start:start + mel.shape[1]] = mel
        else:
            window = fit_frames(mel, self.settings, random_crop_offset(mel.shape[1], self.settings, g))
        augmented = spec_augment(window, g) if self.use_spec_augment else window
        variants = self.variant_rows[self.caption_ids[index]]
        use_variant = len(variants) > 1 and float(torch.rand((), generator=g)) < self.text_aug_prob
        text_row = variants[1 + int(torch.randint(0, len(variants) - 1, (1,), generator=g))] if use_variant else variants[0]
        return {"audio": model_input(window, self.settings), "audio_aug": model_input(augmented, self.settings),
                "text_row": text_row, "caption_id": self.caption_ids[index], "image_id": self.image_ids[index],
                "index": index}


def collate(items: list) -> dict:
    """Stack the good samples; bad ones are reported in ``batch["bad"]``."""
    good = [it for it in items if not isinstance(it, BadSample)]
    bad = [it for it in items if isinstance(it, BadSample)]
    batch: dict[str, Any] = {"bad": bad, "size": len(good)}
    if good:
        batch["audio"] = torch.stack([it["audio"] for it in good])
        batch["audio_aug"] = torch.stack([it["audio_aug"] for it in good])
        for key in ("text_row", "caption_id", "image_id", "index"):
            batch[key] = torch.tensor([it[key] for it in good], dtype=torch.long)
    return batch


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys: a seeded permutation per epoch, split across ranks.

    Global batch ``g`` of the epoch is ``perm[g*B*W : (g+1)*B*W]`` (B = per-rank batch, W = world
    size) and rank ``r`` takes its ``r``-th slice of ``B``: W processes together see exactly the
    batches one process with batch ``B*W`` sees. Incomplete global batches are dropped (a
    contrastive batch needs its negatives). ``start_batch`` skips batches already trained (resume);
    ``stop_batch`` ends the epoch early (whole optimiser steps under gradient accumulation).
    ``epoch`` and ``start_batch`` may be changed between epochs (persistent DataLoader workers).
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, epoch: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, start_batch: int = 0, stop_batch: int | None = None):
        if batch_size * world_size > size:
            raise ParameterError(f"batch_size: a global batch of {batch_size * world_size} needs at least that many "
                                 f"samples, the dataset has {size}")
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, epoch
        self.rank, self.world_size, self.shuffle, self.start_batch = rank, world_size, shuffle, start_batch
        full = size // (batch_size * world_size)
        self.stop_batch = full if stop_batch is None else min(full, stop_batch)

    def __len__(self) -> int:
        return max(0, self.stop_batch - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch))
        else:
            order = torch.arange(self.size)
        global_batch = self.batch_size * self.world_size
        for g in range(self.start_batch, self.stop_batch):
            chunk = order[g * global_batch + self.rank * self.batch_size:][:self.batch_size]
            yield [(self.epoch, int(i)) for i in chunk]


# ------------------------------------------------------------------------------ frozen CLIP targets

def _clip_identity(clip, clip_path: str | os.PathLike | None) -> str:
    """What cached embeddings depend on: the model name and the weights file (path, size, mtime)."""
    ident = str(getattr(clip, "name", ""))
    if clip_path and Path(clip_path).is_file():
        st = Path(clip_path).stat()
        return ident + f"|{Path(clip_path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    h = hashlib.sha256()  # no file to key on: hash the weights themselves
    for t in clip.model.state_dict().values():
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return ident + "|" + h.hexdigest()


class TextTable:
    """Every distinct caption and its offline-augmented variants, embedded once with frozen CLIP.

    ``captions[i]`` has rows ``variant_rows[i]`` in ``texts`` / ``embeddings``; row 0 of each is
    the caption itself.
    """

    def __init__(self, captions: Sequence[str], variants: int = 1, seed: int = 0):
        self.captions = list(captions)
        self.texts: list[str] = []
        self.variant_rows: list[list[int]] = []
        for caption in self.captions:
            rows = []
            for text in text_variants(caption, max(1, variants), seed):
                rows.append(len(self.texts))
                self.texts.append(text)
            self.variant_rows.append(rows)
        self.embeddings: torch.Tensor | None = None

    def embed(self, clip, cache_dir: str | os.PathLike | None = None, clip_path: str | os.PathLike | None = None
              ) -> torch.Tensor:
        self.embeddings = embed_texts_cached(clip, self.texts, cache_dir=cache_dir, clip_path=clip_path)
        return self.embeddings


def _cached(kind: str, key_text: str, cache_dir: str | os.PathLike | None, compute) -> torch.Tensor:
    """``compute()`` once per distinct ``key_text``: stored as ``<cache_dir>/<kind>_<hash>.safetensors``."""
    from ..fileio import load_model_file, save_model_file

    entry = None
    if cache_dir:
        entry = Path(cache_dir) / f"{kind}_{hashlib.sha256(key_text.encode()).hexdigest()[:32]}.safetensors"
        if entry.is_file():
            try:
                return load_model_file(entry, f"{kind}_embedding_cache")[0]["embeddings"]
            except ModelFileError:  # damaged entry: recompute and overwrite
                pass
    embeddings = compute()
    if entry is not None:
        save_model_file(entry, {"embeddings": embeddings}, f"{kind}_embedding_cache", {"count": len(embeddings)})
    return embeddings


def embed_texts_cached(clip, texts: Sequence[str], batch_size: int = 256, cache_dir: str | os.PathLike | None = None,
                       clip_path: str | os.PathLike | None = None) -> torch.Tensor:
    """[N, D] normalised text embeddings, from ``cache_dir`` when the same model embedded them before."""
    def compute() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([clip.encode_text(list(texts[i:i + batch_size])).float().cpu()
                              for i in range(0, len(texts), batch_size)])

    return _cached("text", _clip_identity(clip, clip_path) + "\n" + "\n".join(texts), cache_dir, compute)


def load_image(path: Path) -> torch.Tensor:
    """[H, W, 3] float in [0, 1]: an image file, or the middle frame of a video."""
    import numpy as np

    try:
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            import av

            with av.open(str(path)) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            if not frames:
                raise ParameterError(f"{path}: the video has no frames")
            array = frames[len(frames) // 2]
        else:
            from ..pictures import read_picture

            array = np.asarray(read_picture(path, "image").convert("RGB"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"{path}: could not read the image ({exc})") from None
    return torch.from_numpy(array.copy()).float() / 255.0


def embed_images(clip, paths: Sequence[Path], cache_dir: str | os.PathLike | None = None,
                 clip_path: str | os.PathLike | None = None) -> torch.Tensor:
    """[N, D] normalised CLIP image embeddings, one image at a time (sizes differ); cached on disk like
    the text embeddings, keyed by the model and every image's path, size and mtime."""
    def compute() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([clip.encode_image(load_image(p)[None]).float().cpu() for p in paths])

    def stamp(p: Path) -> str:
        try:
            st = p.stat()
        except OSError:
            return f"{p}|missing"
        return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    return _cached("image", _clip_identity(clip, clip_path) + "\n" + "\n".join(stamp(p) for p in paths),
                   cache_dir, compute)


def build_targets(samples: Sequence[Sample], template: str = DEFAULT_TEMPLATE, text_variants_count: int = 1,
                  seed: int = 0) -> tuple[TextTable, list[int], list[Path], list[int]]:
    """(text table, caption id per sample, distinct image paths, image id per sample (-1: none))."""
    caption_index: dict[str, int] = {}
    caption_ids = [caption_index.setdefault(s.text(template), len(caption_index)) for s in samples]
    table = TextTable(list(caption_index), text_variants_count, seed)
    image_index: dict[Path, int] = {}
    image_ids = [image_index.setdefault(s.image, len(image_index)) if s.image else -1 for s in samples]
    return table, caption_ids, list(image_index), image_ids
