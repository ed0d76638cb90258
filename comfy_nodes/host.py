"""The one place that touches ComfyUI: folder paths, model management, progress and cancel, routes, errors.

Every ComfyUI module (``folder_paths``, ``comfy.*``, ``server``) is imported lazily here, so the
pack imports without ComfyUI (unit tests stub or skip them). The node modules beside this one turn
their inputs into a job request of ``sgim_nodes.jobs`` and run it with a :class:`ComfyRun`: ComfyUI's
progress bar with previews, the loss readout of web/sgim.js, Cancel, ComfyUI's device, and a CPU
allocator that is never touched (its settings are process-wide; see ``sgim_nodes.memory``).

For a new node: run each model through ``on_device(model, torch_device())`` (or ``models_on_device``
for several used together) right before using it; run library code inside ``with job_run(self, unique_id)
as run:`` (or ``with library_errors(self):`` when it needs no run); add a row to ``INPUT_FOR_PARAMETER``
where a library parameter has another name than the input; register the class in nodes.py.

Values passed between nodes (all on the CPU, never modified by a consumer):

    SGIM_STYLEGAN        sgim_nodes.stylegan generator (frozen, float32; moved by ComfyUI's model management)
    SGIM_AUDIO_ENCODER   the audio encoder module of sgim_nodes.audio
    SGIM_CLIP            sgim_nodes.clip.ClipModel
    SGIM_IDENTITY_MODEL  the ArcFace model of sgim_nodes.optimize
    SGIM_LPIPS           sgim_nodes.project LPIPS-VGG16
    SGIM_EMBEDDING       sgim_nodes.optimize.targets.Embedding: weighted CLIP-space targets [B, K, D]
    SGIM_LAYER_MASK      sgim_nodes.optimize.rules.LayerFreedom: per W+ layer, 0 (frozen) .. 1 (free)
    SGIM_WPLUS           dict {"ws": Tensor [B, num_ws, w_dim], "generator": generator name}
    SGIM_AUDIO_FEATURES  comfy_nodes.music_video.MusicFeatures, SGIM_KEYFRAMES its MusicKeyframes
"""

from __future__ import annotations

import contextlib
import json
import os
import threading

import torch

from ..sgim_nodes.errors import ModelFileError, ParameterError, SGIMError
from ..sgim_nodes.jobs.run import Run
from ..sgim_nodes.models import MODEL_FOLDERS
from ..sgim_nodes.node_values import generator_layout, preview_image, short_paths, to_comfy_image, wplus_value  # noqa: F401

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORY_ROOT = "SGIM"
SEARCH_ALIASES = ["sound", "audio", "music", "stylegan", "sgim"]  # node search finds the pack by these
LOSS_EVENT = "sgim.loss"  # custom websocket message: the loss readout of web/sgim.js

# Filled by nodes.py: node id -> class and display name (titles in error messages, the aliases route).
NODE_CLASSES: dict[str, type] = {}
NODE_TITLES: dict[str, str] = {}


# --------------------------------------------------------------------------------------------
# ComfyUI modules, each import lazy and optional
# --------------------------------------------------------------------------------------------

def folder_paths():
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return None
    return folder_paths


def register_model_folders() -> None:
    """Register our model folders with ComfyUI, keeping what the user already configured.

    An ``extra_model_paths.yaml`` entry may already exist for a key, with an empty extension set
    (which means "every file"); we keep its paths and set our extensions. The pack's own
    ``models/<key>/`` folder is searched too.
    """
    fp = folder_paths()
    if fp is None:
        return
    for key, extensions in MODEL_FOLDERS.items():
        if key in fp.folder_names_and_paths:
            paths, old_extensions = fp.folder_names_and_paths[key]
            fp.folder_names_and_paths[key] = (list(paths), set(old_extensions) | extensions)
        else:
            fp.folder_names_and_paths[key] = ([os.path.join(fp.models_dir, key)], set(extensions))
        paths = fp.folder_names_and_paths[key][0]
        for folder in (os.path.join(fp.models_dir, key), os.path.join(PACK_DIR, "models", key)):
            if folder not in paths:  # ComfyUI's models/<key> and the pack's own models/<key>
                fp.add_model_folder_path(key, folder)


def model_file_list(key: str) -> list[str]:
    fp = folder_paths()
    if fp is not None:
        try:
            return fp.get_filename_list(key)
        except KeyError:
            return []
    folder = os.path.join(PACK_DIR, "models", key)  # without ComfyUI: the pack's own folder
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in MODEL_FOLDERS[key])


def model_file_path(key: str, name: str, node: str, input_name: str) -> str:
    """Absolute path of a combo choice, or a ModelFileError naming the node input."""
    from ..sgim_nodes.models import file_in_folder

    fp = folder_paths()
    if fp is not None:
        path = fp.get_full_path(key, name)
    else:  # without ComfyUI: the pack's own folder, and nothing outside it
        found = file_in_folder(os.path.join(PACK_DIR, "models", key), name)
        path = str(found) if found is not None else None
    if not path or not os.path.isfile(path):
        from ..sgim_nodes.models import how_to_get

        folders = fp.folder_names_and_paths.get(key, ([],))[0] if fp is not None else [os.path.join(PACK_DIR, "models", key)]
        raise ModelFileError(f"{node}, input '{input_name}': model file {name!r} not found in the '{key}' model "
                             f"folders ({', '.join(folders) or f'models/{key}/'}; more in extra_model_paths.yaml). "
                             f"{how_to_get(name, key)}")
    return path


def output_directory() -> str:
    fp = folder_paths()
    return fp.get_output_directory() if fp is not None else os.path.join(os.getcwd(), "output")


def input_directory() -> str:
    fp = folder_paths()
    return fp.get_input_directory() if fp is not None else os.path.join(os.getcwd(), "input")


def save_path(filename_prefix: str, out_dir: str):
    """``(folder, file name, next counter, subfolder, prefix)`` as core's savers compute it."""
    fp = folder_paths()
    if fp is not None:
        return fp.get_save_image_path(filename_prefix, out_dir)
    from ..sgim_nodes.node_values import save_path_without_comfyui

    return save_path_without_comfyui(filename_prefix, out_dir)


def workflow_metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """The prompt and workflow as core's savers embed them (none with --disable-metadata)."""
    try:
        from comfy.cli_args import args  # type: ignore[import-not-found]

        if args.disable_metadata:
            return {}
    except ImportError:
        pass
    metadata = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


def torch_device() -> torch.device:
    """ComfyUI's torch device (respects --cpu, --directml, ...); CPU outside ComfyUI."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return torch.device("cpu")
    return mm.get_torch_device()


def throw_if_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed Cancel (never swallowed)."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


def free_device_cache() -> None:
    """Give the optimiser's freed GPU memory back to ComfyUI's other models."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return
    mm.soft_empty_cache()


def progress_bar(total: int, node_id: str | None):
    """A ComfyUI ProgressBar (created per call: it captures the server hook); None outside ComfyUI."""
    try:
        import comfy.utils  # type: ignore[import-not-found]
    except ImportError:
        return None
    return comfy.utils.ProgressBar(total, node_id=node_id)


def _prompt_server():
    try:
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def executing_prompt_id() -> str | None:
    """The prompt the running node belongs to (ComfyUI's execution context), or None outside one."""
    try:
        from comfy_execution.utils import get_executing_context  # type: ignore[import-not-found]
    except ImportError:
        return None
    context = get_executing_context()
    return None if context is None else context.prompt_id


def send_to_browser(event: str, data: dict) -> None:
    """A custom websocket message to the client that queued the prompt."""
    server = _prompt_server()
    if server is not None:
        server.send_sync(event, data, server.client_id)


def show_node_text(text: str, node_id: str | None) -> None:
    """A line of text shown on the node in the editor (ComfyUI's progress text)."""
    server = _prompt_server()
    if server is not None and node_id is not None:
        server.send_progress_text(text, node_id, server.client_id)


def register_routes() -> None:
    """``GET /sgim/generator_info?name=FILE`` for the layer-mask editor, ``GET /sgim/search_aliases`` and
    the live page under ``/sgim/live/`` (must run at import)."""
    try:
        from aiohttp import web
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return

    @server.routes.get("/sgim/generator_info")
    async def generator_info_route(request):
        import asyncio

        name = request.query.get("name", "")
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(None, generator_info, name)
        except SGIMError as exc:  # answered with 200: the editor shows the message (no console error)
            return web.json_response({"error": short_paths(str(exc))})
        return web.json_response(info)

    @server.routes.get("/sgim/search_aliases")
    async def search_aliases_route(request):  # for frontends whose server does not send SEARCH_ALIASES
        return web.json_response({node_id: list(getattr(cls, "SEARCH_ALIASES", []))
                                  for node_id, cls in NODE_CLASSES.items()})

    from .live import register_live_routes  # the live page, /sgim/live/ (comfy_nodes/live.py)

    register_live_routes(server.routes)



# --------------------------------------------------------------------------------------------
# Errors: library errors name their parameter (SGIMError.parameter); this is the one place that
# turns it into the node input the user has to fix.
# --------------------------------------------------------------------------------------------

# Per node: library parameter -> node input, where the names differ. A parameter that is itself an
# input name of the node maps to that input; "*" is the input blamed when the library names no
# parameter (or one without an input here).
INPUT_FOR_PARAMETER: dict[str, dict[str, str]] = {
    "SGIMLoadStyleGAN": {"*": "generator_name"},
    "SGIMLoadAudioEncoder": {"*": "encoder_name"},
    "SGIMLoadCLIP": {"*": "clip_name"},
    "SGIMLoadIdentityModel": {"*": "identity_name"},
    "SGIMEmbedAudio": {"waveform": "audio", "sample_rate": "audio", "audio_encoder": "audio_encoder", "*": "audio"},
    "SGIMEmbedText": {"prompts": "text", "*": "text"},
    "SGIMEmbedImage": {"images": "image", "*": "image"},
    "SGIMLayerMask": {"layer_weights": "weights", "*": "preset"},
    "SGIMSourceLatent": {"truncation": "truncation_psi", "batch": "batch_size", "*": "generator"},
    "SGIMOptimizeLatent": {"source_ws": "source", "targets": "target", "target_weights": "target",
                           "layer_weights": "layer_mask", "layer_freedom": "layer_mask", "id_model": "identity_model",
                           "*": "target"},
    "SGIMInstantEdit": {"source_ws": "source", "targets": "target", "target_weights": "target",
                        "layer_freedom": "layer_mask", "clip": "clip", "*": "target"},
    "SGIMStyleMix": {"ws_a": "wplus_a", "ws_b": "wplus_b", "blend": "layer_mask", "layer_weights": "custom_layers",
                     "*": "wplus_b"},
    "SGIMStyleGANDecode": {"ws": "wplus", "*": "wplus"},
    "SGIMSaveWPlus": {"ws": "wplus", "*": "filename_prefix"},
    "SGIMLoadWPlus": {"*": "w_plus_file"},
    "SGIMLoadLatent": {"*": "latent_file"},
    "SGIMAudioFeatures": {"start": "start_seconds", "end": "end_seconds", "*": "audio"},
    "SGIMMusicKeyframes": {"source_ws": "source", "ws": "source", "targets": "features", "layer_weights": "layer_mask",
                           "*": "features"},
    "SGIMMusicTrajectory": {"*": "keyframes"},
    "SGIMDecodeFrames": {"ws": "wplus", "codes": "wplus", "*": "wplus"},
    "SGIMLoadVGG": {"*": "vgg_name"},
    "SGIMProjectImage": {"wplus_lr": "lr", "tune_lr": "tune_steps", "images": "image", "seed": "init_seed",
                         "*": "image"},
}

def node_id_of(node) -> str:
    """The node id a node class (or instance) is mapped under (a deprecated alias counts as its base)."""
    for cls in type(node).__mro__ if not isinstance(node, type) else node.__mro__:
        if cls.__name__ in INPUT_FOR_PARAMETER:
            return cls.__name__
    return type(node).__name__ if not isinstance(node, type) else node.__name__


def node_title(node) -> str:
    node_id = node_id_of(node)
    return NODE_TITLES.get(node_id, node_id).removesuffix(" (SGIM)")


def input_for(node, parameter: str | None) -> str:
    """The node input that sets the library ``parameter``."""
    node_id = node_id_of(node)
    table = INPUT_FOR_PARAMETER.get(node_id, {})
    if parameter in table:
        return table[parameter]
    cls = NODE_CLASSES.get(node_id)
    if parameter and cls is not None:
        spec = cls.INPUT_TYPES()
        if any(parameter in spec.get(section, {}) for section in ("required", "optional")):
            return parameter
    return table.get("*", parameter or "?")


def node_error(node, input_name: str, message: str, cls: type = None) -> SGIMError:
    """An error whose message starts with the node title and the input to fix."""
    return (cls or ParameterError)(f"{node_title(node)}, input '{input_name}': {short_paths(message)}",
                                   parameter=input_name)


class library_errors:
    """``with library_errors(self):`` around library calls re-raises their SGIMError naming this node's input."""

    def __init__(self, node):
        self.node = node

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if exc is not None and isinstance(exc, SGIMError) and not str(exc).startswith(node_title(self.node) + ","):
            message = str(exc)
            if exc.parameter and message.startswith(f"{exc.parameter}: "):  # the input is named in front instead
                message = message[len(exc.parameter) + 2:]
            raise node_error(self.node, input_for(self.node, exc.parameter), message, type(exc)) from None
        return False


# --------------------------------------------------------------------------------------------
# Models under ComfyUI's model management. Loaders return plain CPU models; ComfyUI's node cache
# keeps them while the graph uses them (IS_CHANGED follows the file). A node that runs a model calls
# ``on_device`` (or ``models_on_device`` for several used together), which registers it with
# ComfyUI once (a ModelPatcher, as core's CLIP-vision loader does) and asks
# ``load_models_gpu`` for it: loaded when a node runs, offloaded when other models need the
# memory, released by "Unload models" / ``/free``. The pack keeps no model of its own.
# --------------------------------------------------------------------------------------------

def file_signature(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def load_model(load, path: str):
    """``load(path)`` outside inference mode, so that the weights can take part in autograd later
    (ComfyUI runs every node under inference_mode)."""
    with torch.inference_mode(False):
        return load(path)


def _module_of(model) -> torch.nn.Module:
    """The torch module that holds ``model``'s weights (ClipModel wraps its open_clip module)."""
    return model if isinstance(model, torch.nn.Module) else model.model


def _model_device(model) -> torch.device:
    param = next(iter(_module_of(model).parameters()), None)
    return param.device if param is not None else torch.device("cpu")


class ManagedModel(torch.nn.Module):
    """What ComfyUI's ModelPatcher moves: one of our models, plus the bookkeeping attributes the
    patcher sets (``device``, loaded-memory counters) kept off our own classes."""

    def __init__(self, model):
        super().__init__()
        self.inner = _module_of(model)
        self.device = _model_device(model)

    def _apply(self, fn, *args, **kwargs):
        # ComfyUI may offload under inference mode; moved weights must stay usable by autograd.
        with torch.inference_mode(False):
            return super()._apply(fn, *args, **kwargs)


_PATCHER_ATTRIBUTE = "_sgim_model_patcher"
_PATCHER_LOCK = threading.Lock()


def model_patcher(model, mm=None):
    """The ModelPatcher of ``model`` (created on first use and kept on the model, so it lives exactly
    as long as the model does); None without ComfyUI."""
    if mm is None:
        mm = _model_management()
        if mm is None:
            return None
    with _PATCHER_LOCK:
        patcher = getattr(model, _PATCHER_ATTRIBUTE, None)
        if patcher is None:
            import comfy.model_patcher  # type: ignore[import-not-found]

            patcher = comfy.model_patcher.ModelPatcher(ManagedModel(model), load_device=mm.get_torch_device(),
                                                       offload_device=mm.unet_offload_device())
            object.__setattr__(model, _PATCHER_ATTRIBUTE, patcher)
        return patcher


def _model_management():
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
    except ImportError:
        return None
    return mm


def models_on_device(models, device: torch.device) -> list:
    """``models`` (None entries pass through) on ``device``, moved in place, loaded together.

    Inside ComfyUI, for its torch device, through ``load_models_gpu`` (which first offloads other
    models if memory is short); otherwise (unit tests, another device) a plain in-place move.
    """
    present = [m for m in models if m is not None]
    mm = _model_management()
    with torch.inference_mode(False):
        if mm is not None and torch.device(device) == torch.device(mm.get_torch_device()):
            mm.load_models_gpu([model_patcher(m, mm) for m in present], force_full_load=True)
        else:
            for m in present:
                if _model_device(m) != torch.device(device):
                    m.to(device)
    return list(models)


def on_device(model, device: torch.device):
    """``model`` on ``device`` (see :func:`models_on_device`); call it right before running the model."""
    return models_on_device([model], device)[0]


class FileLoader:
    """Common behaviour of the loaders: a combo of files, loading outside inference mode, IS_CHANGED by
    file (ComfyUI caches the output while the file is unchanged)."""

    FOLDER = ""
    INPUT_NAME = ""

    @classmethod
    def VALIDATE_INPUTS(cls, **inputs):
        """Named, so ComfyUI leaves the check of the file name to us: a missing file is said as such (which
        file, where it was looked for, how to get it), not as a value missing from the list."""
        try:
            model_file_path(cls.FOLDER, inputs.get(cls.INPUT_NAME), node_title(cls), cls.INPUT_NAME)
        except ModelFileError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, **inputs):
        fp_name = inputs.get(cls.INPUT_NAME)
        try:
            path = model_file_path(cls.FOLDER, fp_name, cls.__name__, cls.INPUT_NAME)
        except SGIMError:
            return float("nan")  # validation reports the missing file
        mtime, size = file_signature(path)
        return f"{mtime}:{size}"

    def _load(self, name: str, load, node_title: str):
        path = model_file_path(self.FOLDER, name, node_title, self.INPUT_NAME)
        with library_errors(self):
            return load_model(load, path)


# The Layer Mask editor asks for a generator's layout; only these small facts are remembered
# (per file version), never the model.
_GENERATOR_INFO: dict[str, tuple[tuple[int, int], dict]] = {}
_GENERATOR_INFO_LOCK = threading.Lock()


def load_generator_file(path: str):
    from ..sgim_nodes.stylegan import load_generator

    generator = load_generator(path, device="cpu", dtype=torch.float32)
    generator.requires_grad_(False)
    return generator


def generator_info(name: str) -> dict:
    """num_ws and the layer groups of a generator file, for the layer-mask editor."""
    try:
        path = model_file_path("stylegan", name, "Layer Mask", "generator")
    except ModelFileError:
        raise ModelFileError(f"{name!r} is not in models/stylegan, so its layers cannot be shown "
                             "(see docs/nodes.md for where to get it)") from None
    signature = file_signature(path)
    with _GENERATOR_INFO_LOCK:
        hit = _GENERATOR_INFO.get(path)
    if hit is not None and hit[0] == signature:
        return hit[1]
    try:
        generator = load_model(load_generator_file, path)
    except SGIMError as exc:
        raise type(exc)(short_paths(str(exc))) from None
    info = {"name": name, **generator_layout(generator)}
    with _GENERATOR_INFO_LOCK:
        _GENERATOR_INFO[path] = (signature, info)
    return info



# --------------------------------------------------------------------------------------------
# Values passed between nodes, and the run of a job inside ComfyUI
# --------------------------------------------------------------------------------------------

def check_wplus(wplus: dict, generator, node, input_name: str) -> torch.Tensor:
    """The W+ tensor of ``wplus`` if it fits ``generator``; else an error naming the node input."""
    from ..sgim_nodes.latents import check_wplus_fits

    try:
        return check_wplus_fits(wplus["ws"], generator, what=f"code from generator {wplus.get('generator')!r}")
    except SGIMError as exc:
        raise node_error(node, input_name, str(exc), type(exc)) from None


def preview_tuple(images: torch.Tensor):
    """First image of a [B,3,H,W] batch in [-1,1] as ComfyUI's JPEG preview tuple (sent at its real size)."""
    return ("JPEG", *preview_image(images))




class ComfyRun(Run):
    """A job inside ComfyUI: its progress bar (with previews), the loss readout, Cancel; the allocator untouched."""

    reuse_cpu_memory = False  # process-wide settings glibc cannot restore: never inside a shared server

    def __init__(self, node_id: str | None = None):
        super().__init__(torch_device())
        self.node_id = node_id
        self.prompt_id = executing_prompt_id()  # node ids repeat across workflow tabs; the readout needs both
        self._bar = None

    def progress(self, done, total, preview=None, text=None, terms=None):
        if self._bar is None or self._bar.total != total:
            self._bar = progress_bar(total, self.node_id)
        if self._bar is not None:
            self._bar.update_absolute(done, total, preview_tuple(preview) if preview is not None else None)
        if terms is not None:
            send_to_browser(LOSS_EVENT, {"node": self.node_id, "step": done, "total": total, "terms": terms,
                                         "prompt_id": self.prompt_id})
        if text:
            show_node_text(text, self.node_id)

    def cancel_requested(self) -> bool:
        throw_if_interrupted()  # ComfyUI's own exception propagates out of the library, never wrapped
        return False

    def wants_previews(self) -> bool:
        return True


@contextlib.contextmanager
def job_run(node, node_id: str | None = None, free_cache: bool = True):
    """``with job_run(self, unique_id) as run:`` around a job: library errors name this node's input, and
    the job's freed GPU memory goes back to ComfyUI's other models afterwards."""
    try:
        with library_errors(node):
            yield ComfyRun(node_id)
    finally:
        if free_cache:
            free_device_cache()


# Inputs that many nodes take, with one tooltip each (a node passes its own where it says more).
SOCKETS = {name: (kind, tooltip) for name, kind, tooltip in [
    ("generator", "SGIM_STYLEGAN", "From Load StyleGAN."),
    ("clip", "SGIM_CLIP", "The CLIP model of the target's space (From Load CLIP)."),
    ("target", "SGIM_EMBEDDING", "What to edit toward: Embed Audio / Text / Image or Mix."),
    ("source", "SGIM_WPLUS", "The W+ code to edit (Source Latent or Load W+ Code)."),
    ("layer_mask", "SGIM_LAYER_MASK", "Which layers may change (Layer Mask); default all."),
    ("audio_encoder", "SGIM_AUDIO_ENCODER", "From Load Audio Encoder."),
]}


def outputs(*rows: tuple[str, str, str]) -> tuple[tuple, tuple, tuple]:
    """``RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS`` of ``(name, type, tooltip)`` rows, one row per output."""
    names, types, tooltips = zip(*rows)
    return types, names, tooltips


def sockets(*names: str, **tooltips: str) -> dict[str, tuple]:
    """Input specs of shared inputs, in order; keyword arguments replace a tooltip."""
    return {name: (SOCKETS[name][0], {"tooltip": tooltips.get(name, SOCKETS[name][1])}) for name in names}


def register_nodes(classes: dict[str, type], titles: dict[str, str]) -> None:
    """Called once by nodes.py: the node ids, their search aliases, model folders and routes."""
    NODE_CLASSES.update(classes)
    NODE_TITLES.update(titles)
    for cls in classes.values():
        cls.SEARCH_ALIASES = SEARCH_ALIASES
    register_model_folders()
    register_routes()
