"""The analysis cache: our safetensors, keyed by the generator's content and the CLIP model's identity.

A cache file records what it was computed from: the sha256 of the generator *file* (or of the
generator's weights when there is no file), the CLIP model's name and the sha256 of its weights, the
analysis settings and the style table. On use:

- no file, a file of another kind (foreign) or one computed from another generator, CLIP or settings
  (stale): the analysis runs and the file is (re)written;
- a file of our kind that cannot be read, or whose tensors do not fit its own record (truncated,
  edited, NaN): a clear :class:`ModelFileError` naming the file; it is never silently replaced;
- while an analysis runs, its running sums are saved after every chunk to ``<cache>.partial``; an
  interrupted run (cancel, crash) resumes from there when started again with the same key.

Default location: ``<models dir>/sgim_instant/<generator stem>.<clip name>.safetensors``
(``$SGIM_INSTANT_CACHE`` overrides the folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..stylegan.stylespace import StyleLayer
from .analysis import AnalysisSettings, PartialAnalysis, StyleDirections, analyze_styles

KIND = "instant_directions"
PARTIAL_KIND = "instant_directions_partial"
TENSORS = ("directions", "style_mean", "style_std", "mean_embedding")
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    from ..models import models_dir

    return Path(os.environ.get("SGIM_INSTANT_CACHE", models_dir() / "sgim_instant"))


def file_sha256(path: str | os.PathLike) -> str:
    from ..download import sha256_of

    return sha256_of(Path(path))


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes, bytes): the identity of weights without a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def generator_file_of(generator, generator_file: str | os.PathLike | None = None) -> Path | None:
    """The file the generator came from: the one given, else the loader's record if it still exists."""
    if generator_file is not None:
        return Path(generator_file)
    recorded = getattr(generator, "source_file", None)
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def generator_identity(generator, generator_file: str | os.PathLike | None = None) -> str:
    """``file:<sha256>`` of the file the generator was loaded from (given, or recorded by the loader),
    else ``weights:<sha256>``. A file's digest is remembered per (size, mtime), so a node graph that runs
    again does not hash a large file again."""
    path = generator_file_of(generator, generator_file)
    if path is not None:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        digest = _FILE_DIGESTS.get(key)
        if digest is None:
            digest = _FILE_DIGESTS[key] = file_sha256(path)
        return "file:" + digest
    cached = getattr(generator, "_sgim_weights_sha256", None)
    if cached is None:
        cached = module_sha256(generator)
        generator._sgim_weights_sha256 = cached
    return "weights:" + cached


def clip_identity(clip) -> str:
    """``<name>:<sha256 of the weights>`` (computed once per model object)."""
    model = getattr(clip, "model", clip)
    cached = getattr(model, "_sgim_weights_sha256", None)
    if cached is None:
        cached = module_sha256(model)
        model._sgim_weights_sha256 = cached
    return f"{getattr(clip, 'name', type(model).__name__)}:{cached}"


def default_cache_path(generator, clip, generator_file: str | os.PathLike | None = None) -> Path:
    path = generator_file_of(generator, generator_file)
    stem = path.stem if path is not None else f"{generator.name}-{generator_identity(generator)[8:20]}"
    clip_name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(getattr(clip, "name", "clip")))
    return cache_dir() / f"{stem}.{clip_name}.safetensors"


def _key(generator_id: str, clip_id: str, settings: AnalysisSettings, layers) -> dict[str, str]:
    return {"generator": generator_id, "clip": clip_id, "settings": json.dumps(settings.key(), sort_keys=True),
            "layers": json.dumps([[l.name, l.kind, l.row, l.channels] for l in layers])}


def save_directions(path: str | os.PathLike, directions: StyleDirections, key: dict[str, str]) -> None:
    from ..fileio import save_model_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(directions, name) for name in TENSORS}
    save_model_file(path, tensors, KIND, directions.info, extra_metadata=key)


def read_directions(path: str | os.PathLike, key: dict[str, str] | None = None) -> StyleDirections | None:
    """The cached directions at ``path``; None when absent, foreign or stale (another key); a
    :class:`ModelFileError` when the file is ours but damaged."""
    from ..fileio import load_model_file, read_safetensors_metadata

    path = Path(path)
    if not path.is_file():
        return None
    try:
        metadata = read_safetensors_metadata(path)
    except ModelFileError as exc:
        raise ModelFileError(f"{exc}. It is the instant-edit analysis cache: delete it to analyse again") from None
    if metadata.get("sgim_kind") != KIND:
        return None  # foreign: not our cache, recompute over it
    if key is not None and any(metadata.get(k) != v for k, v in key.items()):
        return None  # stale
    tensors, info, metadata = load_model_file(path, KIND)
    try:
        layers = [StyleLayer(name, kind, int(row), int(ch), 0) for name, kind, row, ch in json.loads(metadata["layers"])]
        offset, fixed = 0, []
        for layer in layers:
            fixed.append(StyleLayer(layer.name, layer.kind, layer.row, layer.channels, offset))
            offset += layer.channels
        missing = [name for name in TENSORS if name not in tensors]
        if missing:
            raise ValueError(f"tensors {missing} missing")
        d = tensors["directions"]
        if d.ndim != 2 or d.shape[0] != offset or tensors["style_std"].shape != (offset,) \
                or tensors["style_mean"].shape != (offset,) or tensors["mean_embedding"].shape != (d.shape[1],):
            raise ValueError("tensor shapes do not fit the recorded style table")
        if not all(bool(torch.isfinite(tensors[name]).all()) for name in TENSORS):
            raise ValueError("NaN or infinite values")
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: damaged instant-edit analysis cache ({exc}); delete it to analyse "
                             "again") from None
    return StyleDirections(*(tensors[name] for name in TENSORS[:4]), layers=fixed, info=info)


def _read_partial(path: Path, key: dict[str, str]) -> PartialAnalysis | None:
    from ..fileio import load_model_file, read_safetensors_metadata

    if not path.is_file():
        return None
    try:
        metadata = read_safetensors_metadata(path)
        if metadata.get("sgim_kind") != PARTIAL_KIND or any(metadata.get(k) != v for k, v in key.items()):
            return None
        tensors, info, _ = load_model_file(path, PARTIAL_KIND)
        return PartialAnalysis(int(info["done"]), tensors["total"].double(), tensors["embedding_total"].double(),
                               float(info["seconds"]))
    except (ModelFileError, KeyError, ValueError, TypeError):
        return None  # a partial result is only a shortcut: a damaged one is started over


def cached_directions(generator, clip, *, generator_file: str | os.PathLike | None = None,
                      cache: str | os.PathLike | None = None, settings: AnalysisSettings | None = None,
                      run=None, recompute: bool = False) -> tuple[StyleDirections, bool]:
    """The generator's directions from the cache, analysing (and caching) them when needed.

    Returns (directions, hit). ``cache``: the cache file (default :func:`default_cache_path`).
    ``settings``: None accepts a cache of any settings for this generator and CLIP (so an ``analyze`` run
    with more samples is what later edits use) and analyses with the defaults when there is none; given
    settings must match the cache's. ``recompute``: analyse even when a valid cache exists (a damaged one
    is then replaced too).
    """
    from ..fileio import save_model_file

    any_settings = settings is None
    settings = settings or AnalysisSettings()
    path = Path(cache) if cache is not None else default_cache_path(generator, clip, generator_file)
    if run is not None:
        run.status(f"instant-edit analysis cache: {path}")
    layers = generator.style_layers()
    key = _key(generator_identity(generator, generator_file), clip_identity(clip), settings, layers)
    if not recompute:
        found = read_directions(path, {k: v for k, v in key.items() if not (any_settings and k == "settings")})
        if found is not None:
            found.check_matches(generator, int(clip.embed_dim))
            return found, True
    partial_path = path.with_name(path.name + ".partial")
    resume = _read_partial(partial_path, key)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save_partial(partial: PartialAnalysis) -> None:
        save_model_file(partial_path, {"total": partial.total, "embedding_total": partial.embedding_total},
                        PARTIAL_KIND, {"done": partial.done, "seconds": partial.seconds}, extra_metadata=key)

    directions = analyze_styles(generator, clip, settings, run=run, resume=resume, on_chunk=save_partial)
    directions.info.update({"generator": key["generator"], "clip": key["clip"], "resumed_from": resume.done
                            if resume is not None else 0})
    save_directions(path, directions, key)
    partial_path.unlink(missing_ok=True)
    return directions, False
