"""Our own safetensors model files and atomic writes.

Every file the pack writes (generators, audio encoders, W+ latents, training checkpoints) goes
through here so that (1) a crash mid-write never leaves a half file where a good one was, and
(2) every safetensors file says what it holds in its metadata:

    sgim_kind        "stylegan2_generator" | "audio_encoder" | "wplus_latent" | ...
    sgim_format      format version of that kind (an integer as a string)
    config           JSON object describing the architecture / contents

safetensors metadata values must be strings, hence the JSON encoding.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ModelFileError

FORMAT_VERSION = "1"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output_file(path: str | os.PathLike, parameter: str = "out", *, create_folders: bool = True,
                      overwrite: bool = True, overwrite_flag: str = "--overwrite") -> Path:
    """Before any work: ``path`` can be written as a file (not a folder, parent creatable, a name the
    file system takes), so a long run never ends by failing to save its result. With
    ``create_folders=False`` (the commands' ``--out``) a missing folder is refused, naming it, rather
    than created silently (a typo in a folder name would otherwise scatter results). With
    ``overwrite=False`` an existing file is refused too (naming ``overwrite_flag``): a finished result of
    an earlier run is never replaced by accident."""
    from .errors import ParameterError
    from .limits import check_file_name

    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"{parameter}: {path} is an existing folder; give a file name for the result",
                             parameter=parameter)
    check_file_name(parameter, path.name)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise ParameterError(f"{parameter}: {path} exists already; give {overwrite_flag} to replace it, or another "
                             "name (nothing was written)", parameter=parameter)
    if not create_folders and not path.parent.exists():
        missing = path.parent
        while not missing.parent.exists():
            missing = missing.parent
        raise ParameterError(f"{parameter}: the folder {missing} does not exist; create it first "
                             f"(mkdir -p {path.parent}) or give a path in an existing folder", parameter=parameter)
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ParameterError(f"{parameter}: {parent} is a file, so {path} cannot be created",
                                     parameter=parameter)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ParameterError(f"{parameter}: cannot write into {parent} (permission denied)",
                                     parameter=parameter)
            break
    return path


def check_output_folder(path: str | os.PathLike, parameter: str = "out") -> Path:
    """Before any work: ``path`` can be a folder we create or reuse (a cache, a resumable render's pieces):
    an existing folder is fine (that is how a render resumes), a file there or a name too long is refused."""
    from .errors import ParameterError
    from .limits import check_file_name

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{parameter}: {path} is a file, but a folder is needed there; move it or choose "
                             "another name", parameter=parameter)
    check_file_name(parameter, path.name)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ParameterError(f"{parameter}: {parent} is a file, so {path} cannot be created",
                                     parameter=parameter)
            break
    return path


def save_model_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], kind: str,
                    config: dict[str, Any], extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as safetensors with our metadata header, atomically."""
    from safetensors.torch import save_file

    metadata = {"sgim_kind": kind, "sgim_format": FORMAT_VERSION, "config": json.dumps(config, sort_keys=True)}
    metadata.update(extra_metadata or {})
    from .errors import NonFiniteError

    for name, value in tensors.items():  # the last guard: nothing NaN or infinite is ever written
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteError(f"{path}: refused to write '{name}', it contains NaN or infinite values",
                                 parameter=name)
    # safetensors refuses shared or non-contiguous storage; a detached contiguous copy is what we want on disk.
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file; a clear error if it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise ModelFileError(f"{path}: file not found") from None
    except Exception as exc:  # safetensors raises its own SafetensorError for any malformed header
        raise ModelFileError(f"{path}: not a readable .safetensors file ({exc})") from None


def load_model_file(path: str | os.PathLike, kind: str, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Read one of our safetensors files of the given ``kind``: (tensors, config, raw metadata)."""
    from safetensors.torch import load_file

    metadata = read_safetensors_metadata(path)
    found = metadata.get("sgim_kind")
    if found != kind:
        what = f"a '{found}' file" if found else "a safetensors file without comfyui-sgim metadata"
        raise ModelFileError(f"{path}: expected a comfyui-sgim '{kind}' file, but this is {what}")
    try:
        config = json.loads(metadata.get("config", "{}"))
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: arrays nested 100,000 deep
        raise ModelFileError(f"{path}: the 'config' metadata is not valid JSON of usable depth "
                             f"({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: the 'config' metadata should be a JSON object, found {type(config).__name__}")
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:
        raise ModelFileError(f"{path}: could not read the tensors ({exc})") from None
    return tensors, config, metadata
