"""Budgets for everything a file or an input can ask of us, in one place, and the checks that apply them.

A model file, a W+ code or a sound may come from anywhere. Each of them can only ask for work and
memory in proportion to what it legitimately holds: these limits are far above every real model
(StyleGAN2 at 1024 px has about 100 modules and 300 tensors, 5 levels deep; OpenAI CLIP ViT-L/14
about 400 modules) and far below what would take a server down. Anything past a limit is refused
with an :class:`~.errors.SGIMError` that names the file or parameter, before the work starts. The
README's "Safety" section lists them for users.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import NonFiniteError, ParameterError

if TYPE_CHECKING:  # torch is imported where a tensor is checked: command help must not pay for it
    import torch

# --- model files (pickles, torch zips, TorchScript archives) ---------------------------------------
MAX_NESTING_DEPTH = 64  # levels of nested module records (real networks: < 10)
MAX_MODULE_RECORDS = 20_000  # module records reached while flattening a network, counting shared ones per use
MAX_TENSORS = 100_000  # tensors in one network
# Tensor data is written uncompressed by torch.save / torch.jit.save; an archive member that inflates
# to more than this many times its stored size (and more than MIN_INFLATED_BYTES) is a zip bomb.
MAX_COMPRESSION_RATIO = 16
MIN_INFLATED_BYTES = 1 << 20
# What a file's tensors and arrays claim (elements x dtype size, each use of a shared one counted, expanded
# or stride-0 views at their full size) must come from bytes the file holds: a real model claims about
# its own size (x2 leaves room for tied weights); a few KB of views over one tiny storage claim gigabytes.
MAX_CLAIM_RATIO = 2
CLAIM_SLACK_BYTES = 16 << 20  # small files (test models, configs) need not be exact
MAX_OBJECT_VISITS = 1_000_000  # objects reached while adding up what a file claims (per use)

# --- generator configs (our .safetensors metadata, or inferred from tensors) ------------------------
MAX_RESOLUTION = 4096
MAX_CHANNELS = 4096  # feature channels per resolution, z_dim, w_dim, mapping width
MAX_MAPPING_LAYERS = 32
MAX_BLUR_TAPS = 16
MAX_CLASSES = 100_000  # c_dim of a conditional generator (ImageNet: 1,000)
# StyleGAN3 designs: the largest activation one layer computes for one image (channels x its upsampled
# grid), derived from the config at load time. NVlabs' 1024 px T / R: 0.6 G / 1.2 G values; a 4096 px R
# with the default margins 3.5 G; 4096 px with margin 1024 and 64-tap filters: 39 G.
MAX_LAYER_ACTIVATION = 1 << 32

# --- audio encoders (our .safetensors metadata) -------------------------------------------------------
MAX_EMBED_DIM = 4096  # CLIP embedding width (the largest CLIP: 1280)
MAX_MELS = 1024  # mel bands (the paper: 128)
MAX_FFT = 65536  # STFT size (the paper: 2048)
MAX_WINDOW_FRAMES = 100_000  # spectrogram frames per model window (the paper: 864)
MAX_IMAGE_SIDE = 8192  # rows / columns of the encoder's input image (the paper: 512 x 128)

# --- CLIP models built from the shapes in an OpenAI file -----------------------------------------------
MAX_TRANSFORMER_LAYERS = 128  # blocks per tower (the largest CLIP, ViT-bigG/14, has 48)

# --- values handed between nodes, written to disk, or given on the command line ---------------------
MAX_LATENT_ABS = 1e5  # |w| of a W+ code (real codes: about 10; long edits at the largest lr: < 1e5)
MAX_AUDIO_ABS = 1e4  # |sample| of decoded audio (nominally within +-1)
MAX_SAMPLE_RATE = 768_000  # Hz (the highest rate studio formats use)
# Decoded float32 samples per byte of an audio file: even low-bit-rate speech codecs stay under ~300x
# (Opus at 6 kbit/s: 256x); a few KB of FLAC frames that all say "silence" can decode to gigabytes.
MAX_AUDIO_INFLATION = 1000
MIN_AUDIO_BUDGET_BYTES = 256 << 20  # short files may always decode this much
MAX_STEPS = 1_000_000  # optimiser steps in one run
MAX_LR = 100.0  # optimiser learning rate (the paper uses 0.05-0.1)
MAX_LOSS_WEIGHT = 1e6  # lambda_sim, lambda_id on the command line (the paper: < 0.01)
MAX_TRUNCATION = 10.0  # truncation psi of a random source code (the paper: 0.7)
MAX_BATCH = 4096  # codes edited together
MAX_SEED = 2 ** 64 - 1  # torch generators take 64-bit seeds
# --- downloads (``download NAME``) ---
MAX_DOWNLOAD_BYTES = 8 << 30  # one model file (the largest known ones: about 1 GB)
MIN_DOWNLOAD_RATE = 20_000  # bytes per second on average: slower than this is a stalled or drip-fed transfer
MIN_DOWNLOAD_SECONDS = 600  # ... but any transfer may take this long
MAX_PICTURE_PIXELS = 1 << 26  # pixels of a picture file, read from its header before decoding (8192 x 8192)
MAX_FILENAME_BYTES = 200  # one file name we create (file systems allow 255; temp files add a suffix)
MAX_NAME_CHARS = 200  # one class name, or an index given as text
MAX_REPR_CHARS = 120  # a value from a file quoted in an error message
# --- frames one node hands on in memory (Decode Frames' IMAGE: float32, every frame at once) --------
# The batches and the stacked copy coexist for a moment: twice the IMAGE's bytes are counted. Budget:
# a share of the memory available when the node starts, never more than the fixed cap (a 3-minute song
# at 1024 px would otherwise ask for ~54 GB before failing).
HELD_FRAMES_RAM_FRACTION = 0.5
MAX_HELD_FRAMES_BYTES = 16 << 30
TRAJECTORY_CHUNK_FRAMES = 256  # frames whose codes are computed together (float64 temporaries stay small)


def check_int(name: str, value: Any, minimum: int, maximum: int, what: str = "") -> int:
    """``value`` as an int in ``[minimum, maximum]`` (bools and non-integral floats refused)."""
    ok = not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
    if not ok or not minimum <= int(value) <= maximum:
        raise ParameterError(f"{name}: expected {what or 'an integer'} from {minimum} to {maximum}, "
                             f"got {short_repr(value)}", parameter=name)
    return int(value)


def check_float(name: str, value: Any, minimum: float, maximum: float, *, exclusive_minimum: bool = False,
                what: str = "") -> float:
    """``value`` as a finite float in ``[minimum, maximum]`` (or ``(minimum, maximum]``)."""
    try:
        number = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
        number = math.nan
    low_ok = number > minimum if exclusive_minimum else number >= minimum
    if not math.isfinite(number) or not low_ok or number > maximum:
        bracket = "(" if exclusive_minimum else "["
        raise ParameterError(f"{name}: expected {what or 'a number'} in {bracket}{minimum:g}, {maximum:g}], "
                             f"got {short_repr(value)}", parameter=name)
    return number


def check_weight(name: str, value: Any, positive: bool = False) -> float:
    """A finite number ``>= 0`` (``> 0`` when ``positive``): a learning rate, a loss weight, a fraction."""
    try:
        number = float(value) if not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected a number, got {value!r}", parameter=name) from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ParameterError(f"{name}: expected a finite number {'> 0' if positive else '>= 0'}, got {value!r}",
                             parameter=name)
    return number


def check_finite(name: str, tensor: "torch.Tensor", max_abs: float | None = None, what: str = "values",
                 hint: str = "") -> "torch.Tensor":
    """Raise :class:`NonFiniteError` if ``tensor`` holds NaN/inf (or a value beyond ``max_abs``)."""
    import torch

    if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
        return tensor
    if tensor.numel() == 0:
        return tensor
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(f"{name}: {what} contain NaN or infinite values{hint}", parameter=name)
    if max_abs is not None:
        peak = float(tensor.detach().abs().max())
        if peak > max_abs:
            raise NonFiniteError(f"{name}: {what} reach {peak:.3g}, beyond the {max_abs:g} this accepts{hint}",
                                 parameter=name)
    return tensor


def check_finite_weights(module: "torch.nn.Module", source: str, what: str) -> None:
    """A loaded network's weights are all finite: a NaN weight would surface later as a NaN output, far
    from the file that caused it. Raises :class:`~.errors.ModelFileError` naming the file and tensor."""
    import torch

    from .errors import ModelFileError

    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{source}: {what} tensor '{name}' contains NaN or infinite values")


def check_file_name(name: str, value: str) -> str:
    """A file name we are about to create: short enough for every file system (UTF-8 bytes)."""
    size = len(value.encode("utf-8"))
    if size > MAX_FILENAME_BYTES:
        raise ParameterError(f"{name}: the file name would be {size} bytes long; keep it under "
                             f"{MAX_FILENAME_BYTES} (file systems refuse names over 255)", parameter=name)
    return value


def check_tree_walk(path, uses: int, depth: int, tensors: int, typical: str) -> None:
    """Raise :class:`~.errors.ModelFileError` once a walk over a file's module records has gone past the
    budgets above (``typical``: what a real model of that kind holds, for the message)."""
    if uses > MAX_MODULE_RECORDS or depth > MAX_NESTING_DEPTH or tensors > MAX_TENSORS:
        from .errors import ModelFileError

        raise ModelFileError(
            f"{path}: the module tree goes beyond what a model file can hold (limits: {MAX_MODULE_RECORDS:,} "
            f"module records counting shared ones per use, {MAX_NESTING_DEPTH} levels of nesting, "
            f"{MAX_TENSORS:,} tensors; {typical}); the file is damaged or crafted to exhaust memory")


def short_repr(value: Any, limit: int = MAX_REPR_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, safe for values from a file: lists nested 100,000 deep
    or a 5,000-digit integer must not fail (RecursionError, int-to-str limit) while an error is worded."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, limit, limit, limit
    try:
        text = short.repr(value)
    except (RecursionError, ValueError, TypeError, OverflowError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def claimed_bytes(value: Any) -> int:
    """Bytes a tensor or numpy array claims: elements x element size, from its shape (so an expanded or
    stride-0 view counts at the size it would materialise to), 0 for anything else."""
    shape, size = None, 0
    if hasattr(value, "element_size") and hasattr(value, "shape"):  # torch.Tensor (imported lazily)
        shape, size = tuple(value.shape), int(value.element_size())
    elif hasattr(value, "itemsize") and hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy
        shape, size = tuple(value.shape), int(value.itemsize)
    if shape is None:
        return 0
    return math.prod(int(n) for n in shape) * size


def check_claimed(source, values, stored_bytes: int, what: str = "tensors") -> int:
    """Refuse a file whose ``values`` (tensors / arrays; an iterable, each use of a shared one listed) claim
    more than :data:`MAX_CLAIM_RATIO` x the ``stored_bytes`` the file holds (+ :data:`CLAIM_SLACK_BYTES`),
    before anything is materialised. Returns the claimed total."""
    limit = MAX_CLAIM_RATIO * int(stored_bytes) + CLAIM_SLACK_BYTES
    total = 0
    for value in values:
        total += claimed_bytes(value)
        if total > limit:
            from .errors import ModelFileError

            raise ModelFileError(
                f"{source}: its {what} claim more than {limit:,} bytes (shapes x element sizes, shared and "
                f"expanded views counted in full) from a {int(stored_bytes):,}-byte file; a file can only claim "
                f"about what it stores (limit {MAX_CLAIM_RATIO}x + {CLAIM_SLACK_BYTES >> 20} MiB), so it is "
                "damaged or crafted to exhaust memory")
    return total


def iter_claims(obj: Any, source) -> "Any":
    """Every tensor / array inside ``obj`` (dicts, lists, tuples, and the args / state of inert pickle
    records), once per use, walked iteratively and bounded by :data:`MAX_OBJECT_VISITS`."""
    pending, visits = [obj], 0
    while pending:
        item = pending.pop()
        visits += 1
        if visits > MAX_OBJECT_VISITS:
            from .errors import ModelFileError

            raise ModelFileError(f"{source}: the file's object tree goes beyond {MAX_OBJECT_VISITS:,} objects "
                                 "(counting shared ones per use); damaged or crafted to exhaust memory")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif hasattr(item, "qualname") and hasattr(item, "args"):  # safe_pickle.PlainObject
            pending.extend((item.args, item.kwargs, item.state))
        elif claimed_bytes(item):
            yield item


def check_file_claims(path, obj: Any, what: str = "tensors") -> None:
    """:func:`check_claimed` for every tensor / array a loaded file holds, against the file's size."""
    import os

    check_claimed(path, iter_claims(obj, path), os.path.getsize(path), what)


def available_memory_bytes() -> int | None:
    """Memory the system can still give this process (Linux ``MemAvailable``; free physical pages elsewhere
    where the system says; None when unknown). No third-party package: the library declares none for this."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def held_frames_budget(available: int | None = None) -> int:
    """Bytes of frames one node may hold: :data:`HELD_FRAMES_RAM_FRACTION` of ``available`` (measured when
    None), capped at :data:`MAX_HELD_FRAMES_BYTES`."""
    available = available_memory_bytes() if available is None else available
    if available is None:
        return MAX_HELD_FRAMES_BYTES
    return min(MAX_HELD_FRAMES_BYTES, int(HELD_FRAMES_RAM_FRACTION * available))


def check_held_bytes(parameter: str, what: str, claimed: int, held_as: str, available: int | None = None,
                     advice: str = "") -> int:
    """Refuse, before the work, to hold ``claimed`` bytes of ``what`` (``held_as``: how they are held) beyond
    :func:`held_frames_budget`, naming ``parameter``; ``advice``: what the user can lower. Returns ``claimed``."""
    budget = held_frames_budget(available)
    if claimed > budget:
        raise ParameterError(
            f"{parameter}: {what} would hold {claimed / 2 ** 30:.1f} GiB {held_as}, beyond the "
            f"{budget / 2 ** 30:.1f} GiB budget (half the available memory, at most {MAX_HELD_FRAMES_BYTES >> 30} GiB)"
            f"{'; ' + advice if advice else ''}", parameter=parameter)
    return claimed


def check_held_frames(frames: int, height: int, width: int, available: int | None = None,
                      advice: str = "") -> int:
    """:func:`check_held_bytes` for ``frames`` float32 RGB frames of ``height`` x ``width`` held as one IMAGE
    (counted twice: the batches and their stacked copy)."""
    return check_held_bytes("frames", f"{int(frames):,} frames of {int(width)} x {int(height)} px",
                            2 * int(frames) * int(height) * int(width) * 3 * 4,
                            "in memory as one IMAGE (float32, the batches and their stacked copy)", available, advice)
