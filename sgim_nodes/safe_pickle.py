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
    ``torch.save`` stream of one storage, which torch's own safe loader reads."""
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


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
    out = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = scalar
        out[(mod, "_reconstruct")] = _reconstruct_ndarray
    return out


def _reconstruct_ndarray(subtype, shape, dtype):
    """numpy's array pickling entry point (an empty array that BUILD then fills with raw bytes),
    restricted to plain ``ndarray``; object arrays are refused, since their items would be
    arbitrary pickled objects rather than numbers."""
    import numpy as np

    if subtype is not np.ndarray:
        raise TypeError(f"array reconstruction of {subtype!r} refused; only numpy.ndarray is allowed")
    array = np.ndarray.__new__(np.ndarray, shape, dtype)
    if array.dtype.hasobject:
        raise TypeError("numpy object arrays are refused")
    return array


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
        raise UnsafeFileError(
            f"{self._source}: refused to load '{module}.{name}'. The file asks for code outside the "
            "small set of tensor-building functions this loader allows, so it is either not a model "
            "file of the expected kind or it was crafted to run code; nothing from it was executed.")

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
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, UnicodeDecodeError, MemoryError) as exc:
        raise ModelFileError(f"{source}: not a readable pickle (truncated or another kind of file: "
                             f"{type(exc).__name__}: {exc})") from None
