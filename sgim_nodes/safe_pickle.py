"""A restricted unpickler: the only way this project reads a pickle it did not write.

Model files from the internet (NVlabs ``.pkl`` snapshots, TorchScript archives) are pickles, and a
plain ``pickle.load`` runs whatever callable the file names. This unpickler resolves only an
explicit allow-list of ``(module, name)`` globals; for container formats whose classes we do not
want to import (``torch_utils.persistence``, ``__torch__.*`` TorchScript classes) callers map those
names to inert stand-ins that just record their arguments and state. Anything else is refused with
:class:`UnsafeFileError` before it is called, so no code from the file ever runs.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import Any, Callable, Mapping

import torch

from .errors import ModelFileError, UnsafeFileError
from .limits import MAX_COMPRESSION_RATIO, MIN_INFLATED_BYTES


class PlainObject:
    """Inert stand-in for an object of a class we refuse to import.

    Keeps the qualified class name, the constructor arguments (REDUCE/NEWOBJ) and the pickled state
    (BUILD), so that a loader can read the data out without any of the original code.
    """

    def __init__(self, qualname: str, args: tuple = (), kwargs: dict | None = None):
        self.qualname = qualname
        self.args = args
        self.kwargs = kwargs or {}
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"PlainObject({self.qualname})"


def plain_class(qualname: str) -> Callable[..., PlainObject]:
    """A callable usable as a pickle global that builds a :class:`PlainObject` instead of ``qualname``."""

    class _Stub(PlainObject):
        def __new__(cls, *args, **kwargs):  # NEWOBJ calls cls.__new__(cls, *args)
            obj = object.__new__(cls)
            PlainObject.__init__(obj, qualname, args, kwargs)
            return obj

        def __init__(self, *args, **kwargs):  # REDUCE calls cls(*args); state already set in __new__
            pass

    _Stub.__name__ = _Stub.__qualname__ = f"Plain[{qualname}]"
    return _Stub


def _rebuild_legacy_storage(data: bytes):
    """``torch.storage._load_from_bytes`` without its ``weights_only=False``: the bytes are a legacy
    ``torch.save`` stream of one storage, which torch's own safe loader reads once its declared
    sizes are known to fit in the bytes (torch allocates the declared size before reading)."""
    from .errors import torch_message

    check_legacy_torch_stream(io.BytesIO(data), source="an embedded tensor")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # torch's refusal carries advice to turn its safety off: keep only the reason
        message = torch_message(exc)
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc) or "allowed global" in message:
            raise UnsafeFileError(f"an embedded tensor asks for code beyond plain tensors (torch's safe loader "
                                  f"said: {message}); nothing from it was executed") from None
        raise ModelFileError(f"an embedded tensor could not be read ({message})") from None


# The globals plain tensors, parameters and numpy scalars need. Every value is a function that only
# builds data; none of them can be steered into running other code.
TENSOR_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _rebuild_legacy_storage,
    ("torch", "FloatStorage"): torch.FloatStorage,
    ("torch", "HalfStorage"): torch.HalfStorage,
    ("torch", "BFloat16Storage"): torch.BFloat16Storage,
    ("torch", "DoubleStorage"): torch.DoubleStorage,
    ("torch", "LongStorage"): torch.LongStorage,
    ("torch", "IntStorage"): torch.IntStorage,
    ("torch", "ByteStorage"): torch.ByteStorage,
    ("torch", "BoolStorage"): torch.BoolStorage,
}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:  # NumPy 2 moved the module; files carry whichever spelling wrote them
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import scalar
    out = {("numpy", "dtype"): np.dtype, **numpy_array_globals()}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = scalar
    return out


def _reconstruct_ndarray(subtype, shape, dtype):
    """numpy's array pickling entry point (an empty array that BUILD then fills with raw bytes),
    restricted to plain ``ndarray``; object arrays are refused, since their items would be
    arbitrary pickled objects rather than numbers."""
    import numpy as np

    if subtype is not np.ndarray:
        raise TypeError(f"array reconstruction of {subtype!r} refused (plain numpy arrays only)")
    # numpy writes shape (0,) here and the real shape with the raw bytes in BUILD (``__setstate__``, which
    # checks that the bytes fill the shape). The shape given here is never allocated: a pickle that claims
    # billions of elements and never provides them gets an empty array, refused later by its shape.
    array = np.ndarray.__new__(np.ndarray, (0,), dtype)
    if array.dtype.hasobject:
        raise TypeError("numpy object arrays are refused")
    return array


def numpy_array_globals() -> dict[tuple[str, str], Any]:
    """``numpy.ndarray`` and its pickle constructor ``_reconstruct`` (both module spellings: NumPy 1
    wrote ``numpy.core``, NumPy 2 writes ``numpy._core``), restricted as ``_reconstruct_ndarray`` says."""
    import numpy as np

    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = _reconstruct_ndarray
    return out


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only ``allowed`` globals (plus ``stub_prefixes`` as PlainObjects)."""

    def __init__(self, file, *, source: str, allowed: Mapping[tuple[str, str], Any],
                 stub_prefixes: tuple[str, ...] = (), persistent_load: Callable[[Any], Any] | None = None):
        if persistent_load is not None:
            # Set before Unpickler.__init__: the C unpickler binds persistent_load once, at init.
            self.persistent_load = persistent_load  # type: ignore[method-assign]
        super().__init__(file)
        self._source = source
        self._allowed = allowed
        self._stub_prefixes = stub_prefixes
        self._stubs: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if any(module == p or module.startswith(p + ".") for p in self._stub_prefixes):
            qualname = f"{module}.{name}"
            return self._stubs.setdefault(qualname, plain_class(qualname))
        error = UnsafeFileError(
            f"{self._source}: refused to load '{module}.{name}'. The file asks for code outside the "
            "small set of tensor-building functions this loader allows, so it is either not a model "
            "file of the expected kind or it was crafted to run code; nothing from it was executed.")
        error.refused_global = f"{module}.{name}"  # lets a loader recognise a known but unsupported format
        raise error

    def persistent_load(self, pid: Any) -> Any:  # default: formats that use it pass their own
        raise UnsafeFileError(f"{self._source}: unexpected persistent reference {pid!r} in the pickle")


def restricted_load(file, *, source: str, extra_allowed: Mapping[tuple[str, str], Any] | None = None,
                    stub_prefixes: tuple[str, ...] = (), persistent_load: Callable[[Any], Any] | None = None,
                    ) -> Any:
    """Unpickle ``file`` (a binary file object) allowing only tensor globals plus ``extra_allowed``.

    Raises :class:`UnsafeFileError` for a forbidden global and :class:`ModelFileError` for a file
    that is truncated or not a pickle at all; ``source`` (usually the path) is named in both.
    """
    allowed = {**TENSOR_GLOBALS, **_numpy_globals(), **(extra_allowed or {})}
    unpickler = RestrictedUnpickler(file, source=source, allowed=allowed, stub_prefixes=stub_prefixes,
                                    persistent_load=persistent_load)
    try:
        return unpickler.load()
    except UnsafeFileError as exc:
        if not str(exc).startswith(source):
            raise UnsafeFileError(f"{source}: {exc}") from None
        raise
    except ModelFileError as exc:  # a budget refused an embedded part (e.g. a storage): say which file
        raise ModelFileError(f"{source}: {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{source}: the pickle nests too deeply to be a model file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, UnicodeDecodeError, MemoryError, OverflowError) as exc:
        from .errors import torch_message
        from .limits import short_repr

        detail = torch_message(exc) if isinstance(exc, (RuntimeError, pickle.UnpicklingError)) else short_repr(str(exc))
        raise ModelFileError(f"{source}: not a readable pickle (truncated or another kind of file: "
                             f"{type(exc).__name__}: {detail})") from None


# --------------------------------------------------------------------------------------------- budgets
# torch allocates every storage at the size its pickle declares, then fills it from the file; zip
# readers inflate a member to the size the archive declares. Both are checked against what the file
# really holds before torch sees it, so a few bytes cannot ask for gigabytes.

class _Declared:
    """Stand-in for any global while pre-reading a torch pickle: accepts every construction and
    filling opcode, keeps nothing, runs nothing."""

    qualname = ""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _storage_bytes(pid: Any, source: str) -> tuple[str, int]:
    """(key, declared bytes) of a torch ``('storage', type, key, location, numel[, view])`` reference."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise ModelFileError(f"{source}: unexpected persistent reference in the pickle")
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    qualname = getattr(storage_type, "qualname", "")
    element = 1
    if qualname.startswith("torch.") and qualname != "torch.UntypedStorage":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notes
            dtype = getattr(getattr(torch, qualname[len("torch."):], None), "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise ModelFileError(f"{source}: unknown storage type {qualname!r}")
        element = dtype.itemsize
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ModelFileError(f"{source}: storage {key} declares an invalid size {numel!r}")
    return key, numel * element


def _declared_storages(file, source: str) -> dict[str, int]:
    """Read one torch pickle without building anything: {storage key: declared bytes}."""
    declared: dict[str, int] = {}

    class _Scanner(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            qualname = f"{module}.{name}"
            return type(f"Declared[{qualname}]", (_Declared,), {"qualname": qualname})

        def persistent_load(self, pid: Any) -> Any:
            key, size = _storage_bytes(pid, source)
            declared[key] = max(size, declared.get(key, 0))
            return None

    try:
        _Scanner(file).load()
    except ModelFileError:
        raise
    except Exception as exc:  # any damage: torch would fail on it too
        raise ModelFileError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    return declared


LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of every legacy torch.save stream


def check_legacy_torch_stream(file, source: str) -> None:
    """A legacy (non-zip) ``torch.save`` stream must hold every storage its pickle declares (torch
    allocates each at its declared size before reading it). A stream that is not a legacy torch file
    at all is left to ``torch.load`` to report."""
    try:
        if _plain_pickle(file, source) != LEGACY_TORCH_MAGIC:
            return
    except ModelFileError:
        return
    for _ in range(2):  # protocol version, system info
        _plain_pickle(file, source)
    declared = _declared_storages(file, source)
    _plain_pickle(file, source)  # the list of storage keys
    position = file.tell()
    file.seek(0, io.SEEK_END)
    available = file.tell() - position
    file.seek(position)
    needed = sum(declared.values()) + 8 * len(declared)  # each storage: an 8-byte length, then its bytes
    if needed > available:
        raise ModelFileError(f"{source}: the file declares {needed:,} bytes of tensor data but holds only "
                             f"{available:,}; it is truncated or crafted to exhaust memory")


def _plain_pickle(file, source: str) -> Any:
    """One pickle of plain data (a torch file header): no globals at all."""
    class _Plain(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise ModelFileError(f"{source}: unexpected '{module}.{name}' in a torch file header")

    try:
        return _Plain(file).load()
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{source}: not a readable PyTorch file ({type(exc).__name__}: {exc})") from None


def check_zip_member(info, source: str) -> None:
    """Refuse an archive member that would inflate far beyond its stored size (a zip bomb)."""
    import zipfile

    limit = max(MIN_INFLATED_BYTES, MAX_COMPRESSION_RATIO * info.compress_size)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > limit:
        raise ModelFileError(f"{source}: archive member {info.filename!r} would inflate from "
                             f"{info.compress_size:,} to {info.file_size:,} bytes; tensor data is stored "
                             f"uncompressed, so this is refused (limit {MAX_COMPRESSION_RATIO}x)")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ModelFileError(f"{source}: archive member {info.filename!r} declares {info.file_size:,} bytes "
                             f"but stores {info.compress_size:,}")


def check_torch_zip(path, source: str | None = None) -> None:
    """Before ``torch.load`` of a zip checkpoint: no member inflates beyond the budget, and every
    storage the ``data.pkl`` declares fits in its member."""
    import zipfile

    source = source or str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"{source}: not a readable PyTorch zip file ({exc})") from None
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        for info in infos.values():
            check_zip_member(info, source)
        pickles = [name for name in infos if name.endswith("/data.pkl") and name.count("/") == 1]
        for name in pickles:
            prefix = name.rsplit("/", 1)[0]
            with archive.open(infos[name]) as f:
                declared = _declared_storages(io.BytesIO(f.read()), source)
            for key, size in declared.items():
                member = infos.get(f"{prefix}/data/{key}")
                if member is None:
                    raise ModelFileError(f"{source}: storage {key} is missing from the archive (truncated?)")
                if size > member.file_size:
                    raise ModelFileError(f"{source}: storage {key} declares {size:,} bytes but its archive member "
                                         f"holds {member.file_size:,}; the file is damaged or crafted")


def check_torch_file(path) -> None:
    """Size checks for any ``torch.save`` file (zip or legacy) before ``torch.load`` reads it."""
    import zipfile

    if zipfile.is_zipfile(path):
        check_torch_zip(path)
        return
    with open(path, "rb") as f:
        check_legacy_torch_stream(f, str(path))
