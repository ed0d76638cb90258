"""ComfyUI nodes of comfyui-sgim: thin V1 node classes over the ``sgim_nodes`` library.

Everything here is glue: turning ComfyUI values (AUDIO dicts, IMAGE tensors, combo file names)
into library calls, finding model files through ``folder_paths``, handing models to ComfyUI's model
management (``on_device``), reporting progress, and naming the node input when something is wrong
(``INPUT_FOR_PARAMETER``, ``library_errors``). The maths lives in ``sgim_nodes``.

For a new node: run each model through ``on_device(model, torch_device())`` (or ``models_on_device``
for several used together) right before using it; wrap library calls in ``with library_errors(self):``
and add a row to ``INPUT_FOR_PARAMETER`` where a library parameter has another name than the input;
register it in ``NODE_CLASS_MAPPINGS`` (it gets the pack's ``SEARCH_ALIASES``).

ComfyUI modules (``folder_paths``, ``comfy.*``, ``server``) are imported lazily through the small
adapter section below, so this file imports without ComfyUI (unit tests stub or skip them).

Values passed between nodes (all on the CPU, never modified by a consumer):

    SGIM_STYLEGAN        sgim_nodes.stylegan.Generator (frozen, float32; moved by ComfyUI's model management)
    SGIM_AUDIO_ENCODER   the audio encoder module of sgim_nodes.audio
    SGIM_CLIP            sgim_nodes.clip.ClipModel
    SGIM_IDENTITY_MODEL  the ArcFace model of sgim_nodes.optimize
    SGIM_EMBEDDING       Embedding: weighted CLIP-space targets, vectors [B, K, D] + weights [K]
    SGIM_LAYER_MASK      LayerFreedom: per W+ layer, 0 (frozen) .. 1 (free)
    SGIM_WPLUS           dict {"ws": Tensor [B, num_ws, w_dim], "generator": generator name}
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass

import torch

from .sgim_nodes.errors import ModelFileError, NonFiniteError, ParameterError, SGIMError

PACK_DIR = os.path.dirname(os.path.abspath(__file__))
CATEGORY_ROOT = "SGIM"

# ComfyUI folder keys (folder_paths) -> accepted file extensions. "stylegan" is shared with other
# StyleGAN packs; the others are ours (core owns "clip" and "audio_encoders").
MODEL_FOLDERS = {
    "stylegan": {".pt", ".pth", ".pkl", ".safetensors"},
    "sgim_audio_encoders": {".pt", ".pth", ".safetensors"},
    "sgim_clip": {".pt", ".pth", ".bin", ".safetensors"},
    "sgim_identity": {".pt", ".pth", ".safetensors"},
    "sgim_vgg": {".pt", ".pth"},
}
LOSS_EVENT = "sgim.loss"  # custom websocket message read by web/sgim.js


# --------------------------------------------------------------------------------------------
# ComfyUI adapter: the only place that touches ComfyUI modules, each import lazy and optional.
# --------------------------------------------------------------------------------------------

def _folder_paths():
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
    fp = _folder_paths()
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
    fp = _folder_paths()
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
    from .sgim_nodes.models import file_in_folder

    fp = _folder_paths()
    if fp is not None:
        path = fp.get_full_path(key, name)
    else:  # without ComfyUI: the pack's own folder, and nothing outside it
        found = file_in_folder(os.path.join(PACK_DIR, "models", key), name)
        path = str(found) if found is not None else None
    if not path or not os.path.isfile(path):
        raise ModelFileError(f"{node}, input '{input_name}': model file {name!r} not found in the "
                             f"'{key}' model folders (models/{key}/ or extra_model_paths.yaml)")
    return path


def output_directory() -> str:
    fp = _folder_paths()
    return fp.get_output_directory() if fp is not None else os.path.join(os.getcwd(), "output")


def input_directory() -> str:
    fp = _folder_paths()
    return fp.get_input_directory() if fp is not None else os.path.join(os.getcwd(), "input")


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
    """``GET /sgim/generator_info?name=FILE`` for the layer-mask editor and ``GET /sgim/search_aliases``
    (must run at import)."""
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
                                  for node_id, cls in NODE_CLASS_MAPPINGS.items()})


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
                           "layer_weights": "layer_mask", "id_model": "identity_model", "*": "target"},
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

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/:,]+/)+([^\s'\"/:,]+)")


def short_paths(text: str) -> str:
    """Absolute paths in a message reduced to their file names (what the user picked in a combo)."""
    return _ABSOLUTE_PATH.sub(r"\1", text)


def node_id_of(node) -> str:
    """The node id a node class (or instance) is mapped under (a deprecated alias counts as its base)."""
    for cls in type(node).__mro__ if not isinstance(node, type) else node.__mro__:
        if cls.__name__ in INPUT_FOR_PARAMETER:
            return cls.__name__
    return type(node).__name__ if not isinstance(node, type) else node.__name__


def node_title(node) -> str:
    node_id = node_id_of(node)
    return NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id).removesuffix(" (SGIM)")


def input_for(node, parameter: str | None) -> str:
    """The node input that sets the library ``parameter``."""
    node_id = node_id_of(node)
    table = INPUT_FOR_PARAMETER.get(node_id, {})
    if parameter in table:
        return table[parameter]
    cls = NODE_CLASS_MAPPINGS.get(node_id)
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
            raise node_error(self.node, input_for(self.node, exc.parameter), str(exc), type(exc)) from None
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


# The Layer Mask editor asks for a generator's layout; only these small facts are remembered
# (per file version), never the model.
_GENERATOR_INFO: dict[str, tuple[tuple[int, int], dict]] = {}
_GENERATOR_INFO_LOCK = threading.Lock()


def load_generator_file(path: str):
    from .sgim_nodes.stylegan import load_generator

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
    groups = {preset: preset_freedom(preset, generator.num_ws, getattr(generator, "ws_resolutions", None))
              for preset in ("coarse", "middle", "fine")}
    info = {"name": name, "num_ws": generator.num_ws, "resolution": generator.resolution,
            "w_dim": generator.w_dim, "family": getattr(generator, "family", "stylegan2"), "groups": groups}
    with _GENERATOR_INFO_LOCK:
        _GENERATOR_INFO[path] = (signature, info)
    return info


# --------------------------------------------------------------------------------------------
# Values passed between nodes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Embedding:
    """CLIP-space targets: ``vectors`` [B, K, D] (unit length), one weight per component K.

    A single audio/text/image embedding has K = 1; Mix Embeddings concatenates components, so the
    optimiser can weigh each term of the objective (and B carries a batch of clips or prompts).
    """

    vectors: torch.Tensor
    weights: tuple[float, ...]
    labels: tuple[str, ...]
    clip_model: str | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def batch(self) -> int:
        return int(self.vectors.shape[0])


def single_embedding(vectors: torch.Tensor, label: str, clip_model: str | None) -> Embedding:
    vectors = vectors.detach().to("cpu", torch.float32).clone()
    return Embedding(vectors=vectors[:, None, :], weights=(1.0,), labels=(label,), clip_model=clip_model)


def wplus_value(ws: torch.Tensor, generator_name: str, ws_resolutions=None) -> dict:
    """``ws_resolutions``: the generator's nominal resolution per W+ row when it has its own layer
    grouping (StyleGAN3), so that Style Mix presets pick the same rows as the Layer Mask."""
    value = {"ws": ws.detach().to("cpu", torch.float32).clone(), "generator": generator_name}
    if ws_resolutions is not None:
        value["ws_resolutions"] = list(ws_resolutions)
    return value


def check_wplus(wplus: dict, generator, node, input_name: str) -> torch.Tensor:
    """The W+ tensor of ``wplus`` if it fits ``generator``; else an error naming the node input."""
    from .sgim_nodes.latents import check_wplus_fits

    try:
        return check_wplus_fits(wplus["ws"], generator, what=f"code from generator {wplus.get('generator')!r}")
    except SGIMError as exc:
        raise node_error(node, input_name, str(exc), type(exc)) from None


def to_comfy_image(images: torch.Tensor) -> torch.Tensor:
    """Generator output [B,3,H,W] in [-1,1] -> ComfyUI IMAGE [B,H,W,3] in [0,1] on the CPU."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


def preview_tuple(images: torch.Tensor):
    """First image of a [B,3,H,W] batch in [-1,1] as ComfyUI's JPEG preview tuple."""
    from PIL import Image

    array = (to_comfy_image(images[:1])[0].numpy() * 255).round().astype("uint8")
    return ("JPEG", Image.fromarray(array), 512)


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

class _Loader:
    """Common behaviour of the four loaders: a combo of files, loading outside inference mode, IS_CHANGED by
    file (ComfyUI caches the output while the file is unchanged)."""

    FOLDER = ""
    INPUT_NAME = ""

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


class SGIMLoadStyleGAN(_Loader):
    FOLDER, INPUT_NAME = "stylegan", "generator_name"
    DESCRIPTION = ("Loads a StyleGAN2 or StyleGAN3 generator from models/stylegan (rosinality .pt; NVlabs "
                   "stylegan2-ada / stylegan3 .pkl and TensorFlow StyleGAN2 .pkl, read without running their code; "
                   "conditional ones too; or our .safetensors).")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = ("SGIM_STYLEGAN",)
    RETURN_NAMES = ("generator",)
    OUTPUT_TOOLTIPS = ("The frozen generator; its W+ space has one row per synthesis layer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"generator_name": (model_file_list("stylegan"), {
            "tooltip": "Generator file in models/stylegan (e.g. landscape.pt for LSUN 256, ffhq.pkl for faces)."})}}

    def load(self, generator_name):
        return (self._load(generator_name, load_generator_file, "Load StyleGAN"),)


class SGIMLoadAudioEncoder(_Loader):
    FOLDER, INPUT_NAME = "sgim_audio_encoders", "encoder_name"
    DESCRIPTION = ("Loads an audio encoder that maps sound into a CLIP space (the paper's "
                   "resnet18_57.pth, or a .safetensors trained with `python -m sgim_nodes train`).")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = ("SGIM_AUDIO_ENCODER",)
    RETURN_NAMES = ("audio_encoder",)
    OUTPUT_TOOLTIPS = ("The audio encoder (frozen).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"encoder_name": (model_file_list("sgim_audio_encoders"), {
            "tooltip": "Audio encoder file in models/sgim_audio_encoders."})}}

    def load(self, encoder_name):
        def load(path):
            from .sgim_nodes.audio import load_audio_encoder

            encoder = load_audio_encoder(path, device="cpu")
            return encoder.eval().requires_grad_(False)

        return (self._load(encoder_name, load, "Load Audio Encoder"),)


class SGIMLoadCLIP(_Loader):
    FOLDER, INPUT_NAME = "sgim_clip", "clip_name"
    DESCRIPTION = ("Loads a CLIP model (OpenAI ViT-B-32.pt, read without running its TorchScript "
                   "code, or an open_clip state dict) from models/sgim_clip. Nothing is downloaded.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = ("SGIM_CLIP",)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The CLIP model whose space the audio encoder was aligned to.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (model_file_list("sgim_clip"), {
                "tooltip": "CLIP file in models/sgim_clip (the paper uses OpenAI ViT-B-32.pt)."}),
            "model_name": ("STRING", {"default": "", "tooltip":
                "open_clip architecture name (e.g. ViT-B-32) when it cannot be read from the file; "
                "leave empty to detect it."}),
        }}

    @classmethod
    def IS_CHANGED(cls, clip_name, model_name=""):
        return f"{super().IS_CHANGED(clip_name=clip_name)}:{model_name}"

    def load(self, clip_name, model_name=""):
        def load(path):
            from .sgim_nodes.clip import load_clip

            return load_clip(path, model_name=model_name.strip() or None, device="cpu")

        return (self._load(clip_name, load, "Load CLIP"),)


class SGIMLoadIdentityModel(_Loader):
    FOLDER, INPUT_NAME = "sgim_identity", "identity_name"
    DESCRIPTION = ("Loads the ArcFace IR-SE50 face-identity network (model_ir_se50.pth) used by the "
                   "identity loss of face edits; connect it to Optimize Latent and set lambda_id > 0.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = ("SGIM_IDENTITY_MODEL",)
    RETURN_NAMES = ("identity_model",)
    OUTPUT_TOOLTIPS = ("The identity network (frozen).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"identity_name": (model_file_list("sgim_identity"), {
            "tooltip": "IR-SE50 file in models/sgim_identity (model_ir_se50.pth)."})}}

    def load(self, identity_name):
        def load(path):
            from .sgim_nodes.optimize import load_id_model

            return load_id_model(path, device="cpu")

        return (self._load(identity_name, load, "Load Identity Model"),)


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------

class SGIMEmbedAudio:
    DESCRIPTION = ("Embeds a sound (core AUDIO, e.g. from Load Audio) into the CLIP space with the "
                   "audio encoder. Long sounds are cut into windows of the model's length and pooled.")
    CATEGORY = f"{CATEGORY_ROOT}/embed"
    RETURN_TYPES = ("SGIM_EMBEDDING",)
    RETURN_NAMES = ("embedding",)
    OUTPUT_TOOLTIPS = ("Unit-length CLIP-space target, one per clip of the AUDIO batch.",)
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio_encoder": ("SGIM_AUDIO_ENCODER", {"tooltip": "From Load Audio Encoder."}),
            "audio": ("AUDIO", {"tooltip": "Sound to embed (core AUDIO: waveform [B, C, T] + sample_rate)."}),
            "start_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.1,
                                        "tooltip": "Ignore the sound before this time."}),
            "end_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.1,
                                      "tooltip": "Ignore the sound after this time (0 = until the end)."}),
            "hop_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.5, "tooltip":
                "Step between analysis windows for sounds longer than one window (0 = the window length, "
                "no overlap). The paper uses only the first window of each clip."}),
            "pool": (["mean", "first"], {"default": "mean", "tooltip":
                "How to combine the windows of a long sound: their mean, or only the first window "
                "(exactly the paper's inference)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def embed(self, audio_encoder, audio, start_seconds=0.0, end_seconds=0.0, hop_seconds=0.0, pool="mean",
              unique_id=None):
        from .sgim_nodes.audio import embed_audio, measure_signal

        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise node_error(self, "audio", "expected core AUDIO {'waveform': [B, C, T], 'sample_rate': int}")
        encoder = on_device(audio_encoder, torch_device())
        with library_errors(self):
            vectors = embed_audio(encoder, audio["waveform"], audio["sample_rate"], pool=pool,
                                  hop_seconds=hop_seconds or None,
                                  start_seconds=start_seconds or None, end_seconds=end_seconds or None)
            warning = measure_signal(audio["waveform"], int(audio["sample_rate"]), start_seconds or None,
                                     end_seconds or None).warning()
        clip_model = (getattr(audio_encoder, "config", None) or {}).get("clip_model")
        result = (single_embedding(vectors, "audio", clip_model),)
        if warning is None:
            return result
        logging.getLogger(__name__).warning("Embed Audio: %s", warning)
        show_node_text(warning, unique_id)
        return {"ui": {"text": [warning]}, "result": result}


class SGIMEmbedText:
    DESCRIPTION = "Embeds a text prompt with CLIP, as a target for text-guided edits or for mixing with sound."
    CATEGORY = f"{CATEGORY_ROOT}/embed"
    RETURN_TYPES = ("SGIM_EMBEDDING",)
    RETURN_NAMES = ("embedding",)
    OUTPUT_TOOLTIPS = ("Unit-length CLIP text embedding (one per line when batch_lines is on).",)
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("SGIM_CLIP", {"tooltip": "From Load CLIP."}),
            "text": ("STRING", {"multiline": True, "default": "a photo of a landscape in a thunderstorm",
                                "tooltip": "The prompt, e.g. 'a landscape at night'."}),
            "batch_lines": ("BOOLEAN", {"default": False, "label_on": "one target per line",
                                        "label_off": "whole text", "tooltip":
                                        "Treat each non-empty line as its own target (a batch of edits)."}),
        }}

    def embed(self, clip, text, batch_lines=False):
        prompts = [line.strip() for line in text.splitlines() if line.strip()] if batch_lines else [text.strip()]
        if not prompts or not prompts[0]:
            raise node_error(self, "text", "the prompt is empty")
        clip = on_device(clip, torch_device())
        with torch.no_grad(), library_errors(self):
            vectors = clip.encode_text(prompts)
        return (single_embedding(vectors, "text", getattr(clip, "name", None)),)


class SGIMEmbedImage:
    DESCRIPTION = "Embeds an IMAGE with CLIP, as a target (edit toward the look of a reference picture)."
    CATEGORY = f"{CATEGORY_ROOT}/embed"
    RETURN_TYPES = ("SGIM_EMBEDDING",)
    RETURN_NAMES = ("embedding",)
    OUTPUT_TOOLTIPS = ("Unit-length CLIP image embedding, one per image of the batch.",)
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("SGIM_CLIP", {"tooltip": "From Load CLIP."}),
            "image": ("IMAGE", {"tooltip": "Reference image(s), e.g. from Load Image."}),
        }}

    def embed(self, clip, image):
        if image.dim() != 4 or image.shape[-1] not in (3, 4) or 0 in image.shape:
            raise node_error(self, "image", f"expected a non-empty IMAGE [B, H, W, 3], got {list(image.shape)}")
        if not bool(torch.isfinite(image).all()):
            raise node_error(self, "image", "the image contains NaN or infinite values")
        clip = on_device(clip, torch_device())
        with torch.no_grad(), library_errors(self):
            vectors = clip.encode_image(image[..., :3])
        return (single_embedding(vectors, "image", getattr(clip, "name", None)),)


class SGIMMixEmbeddings:
    DESCRIPTION = ("Combines up to three targets (e.g. a sound and a text) into one weighted objective: "
                   "the optimiser pulls the image toward each target with its weight.")
    CATEGORY = f"{CATEGORY_ROOT}/embed"
    RETURN_TYPES = ("SGIM_EMBEDDING",)
    RETURN_NAMES = ("embedding",)
    OUTPUT_TOOLTIPS = ("The weighted set of targets.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        weight = {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05}
        return {
            "required": {
                "embedding_a": ("SGIM_EMBEDDING", {"tooltip": "First target (e.g. from Embed Audio)."}),
                "weight_a": ("FLOAT", {**weight, "tooltip": "Weight of the first target."}),
            },
            "optional": {
                "embedding_b": ("SGIM_EMBEDDING", {"tooltip": "Second target (e.g. from Embed Text)."}),
                "weight_b": ("FLOAT", {**weight, "tooltip": "Weight of the second target."}),
                "embedding_c": ("SGIM_EMBEDDING", {"tooltip": "Optional third target."}),
                "weight_c": ("FLOAT", {**weight, "tooltip": "Weight of the third target."}),
            },
        }

    def mix(self, embedding_a, weight_a=1.0, embedding_b=None, weight_b=1.0, embedding_c=None, weight_c=1.0):
        from .sgim_nodes.optimize.rules import normalize_target_weights

        parts = [(name, e, w) for name, e, w in (("embedding_a", embedding_a, weight_a),
                                                  ("embedding_b", embedding_b, weight_b),
                                                  ("embedding_c", embedding_c, weight_c)) if e is not None]
        if sum(w for _, _, w in parts) <= 0:
            raise ParameterError("Mix Embeddings, input 'weight_a': at least one weight must be above 0")
        first = parts[0][1]
        batch = max(e.batch for _, e, _ in parts)
        vectors, weights, labels = [], [], []
        for name, e, w in parts:
            if e.dim != first.dim:
                raise ParameterError(f"Mix Embeddings, input '{name}': a {e.dim}-d embedding cannot be mixed "
                                     f"with the {first.dim}-d embedding_a; they come from different CLIP spaces")
            if e.batch not in (1, batch):
                raise ParameterError(f"Mix Embeddings, input '{name}': batch of {e.batch} does not match "
                                     f"the batch of {batch} of the other embeddings (use 1 or {batch})")
            vectors.append(e.vectors.expand(batch, -1, -1))
            weights += [x * w for x in e.weights]
            labels += list(e.labels)
        clip_model = next((e.clip_model for _, e, _ in parts if e.clip_model), None)
        relative = normalize_target_weights(weights).tolist()  # the library's rule, as for --weights
        return (Embedding(torch.cat(vectors, dim=1).clone(), tuple(relative), tuple(labels), clip_model),)


# --------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------

LAYER_PRESETS = ["all", "coarse", "middle", "fine", "custom"]


@dataclass(frozen=True)
class LayerFreedom:
    """SGIM_LAYER_MASK: how free each W+ layer is, ``freedom`` in [0, 1] per layer.

    0 freezes the layer (it stays bit-identical to the source), 1 is the paper's plain
    similarity weight g = 1, and values between hold the layer back harder (g = 1 / freedom).
    Style Mix reads the same numbers as blend weights toward its second code.
    """

    freedom: tuple[float, ...]
    generator: str = ""

    @property
    def num_ws(self) -> int:
        return len(self.freedom)

    def layer_mask(self):
        """The optimiser's LayerMask (similarity weights g and frozen rows), by the library's rulebook."""
        from .sgim_nodes.optimize.rules import freedom_mask

        return freedom_mask(self.freedom)

    def blend(self) -> torch.Tensor:
        return torch.tensor(self.freedom, dtype=torch.float32)


def preset_freedom(preset: str, num_ws: int, ws_resolutions=None) -> list[float]:
    from .sgim_nodes.optimize.rules import preset_freedom as library_preset_freedom

    return library_preset_freedom(preset, num_ws, ws_resolutions)


class SGIMLayerMask:
    DESCRIPTION = ("Chooses how freely each W+ layer of the generator may change during the edit: coarse "
                   "layers (4-8 px) hold pose and layout, middle ones (16-32 px) shapes and features, fine "
                   "ones colour and texture. Drag the bars (0 = frozen, 1 = free) or pick a preset.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ("SGIM_LAYER_MASK",)
    RETURN_NAMES = ("layer_mask",)
    OUTPUT_TOOLTIPS = ("Per-layer freedom for Optimize Latent / blend weights for Style Mix.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("SGIM_STYLEGAN", {"tooltip": "The generator the mask is for (sets the number of layers)."}),
            "preset": (LAYER_PRESETS, {"default": "all", "tooltip":
                "Layers that may change (the others are frozen); 'custom' uses the bars (weights)."}),
            "weights": ("STRING", {"default": "", "tooltip":
                "Custom per-layer freedom as a JSON list of numbers in [0, 1], one per W+ layer (written "
                "by the bar editor; used when preset is 'custom')."}),
        }}

    def build(self, generator, preset="all", weights=""):
        from .sgim_nodes.optimize.rules import check_freedom

        if preset != "custom":
            try:
                freedom = LayerFreedom(tuple(preset_freedom(preset, generator.num_ws,
                                                                getattr(generator, "ws_resolutions", None))),
                                        generator.name)
                freedom.layer_mask().check(generator.num_ws)
            except SGIMError as exc:  # the preset, not a weight, selected nothing
                raise node_error(self, "preset", f"{preset!r} for generator {generator.name!r} "
                                               f"({generator.num_ws} W+ layers): {exc}", type(exc)) from None
            return (freedom,)
        try:
            values = json.loads(weights) if weights.strip() else None
        except json.JSONDecodeError as exc:
            raise node_error(self, "weights", f"not valid JSON ({exc}); expected a list of "
                                              f"{generator.num_ws} numbers") from None
        if (not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and 0 <= v <= 1 for v in values)):
            raise node_error(self, "weights", f"expected a JSON list of {generator.num_ws} numbers in [0, 1], "
                                              f"got {weights[:80]!r}")
        with library_errors(self):  # count and "every layer frozen" are the rulebook's own checks
            freedom = check_freedom(values, generator.num_ws, "weights")
        return (LayerFreedom(tuple(freedom), generator.name),)


class SGIMSourceLatent:
    DESCRIPTION = ("The image to edit, as a W+ code: a random face/landscape from a seed (with truncation "
                   "toward the average), or the generator's average image.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ("SGIM_WPLUS",)
    RETURN_NAMES = ("wplus",)
    OUTPUT_TOOLTIPS = ("W+ code [batch, num_ws, w_dim].",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("SGIM_STYLEGAN", {"tooltip": "From Load StyleGAN."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the random z (batch item i uses the next draws of this seed)."}),
            "truncation_psi": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.5, "step": 0.05, "tooltip":
                "Pull toward the average image: 1 = no truncation, smaller = more typical (paper: 0.7)."}),
            "mode": (["random", "mean"], {"default": "random", "tooltip":
                "'random' draws z from the seed; 'mean' uses the average latent (seed ignored)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Number of source images."}),
        }, "optional": {
            "class_index": ("INT", {"default": -1, "min": -1, "max": 100000, "tooltip":
                "Conditional generators (e.g. a WikiArt model with one class per style): the class to draw, "
                "0-based. -1 = none: a random class per image from the seed. Must stay -1 for ordinary "
                "(unconditional) generators."}),
            "class_name": ("STRING", {"default": "", "tooltip":
                "Conditional generators whose file carries class names (a .safetensors converted with "
                "--class-names): the class by name; overrides class_index. Leave empty otherwise."}),
        }}

    def sample(self, generator, seed=0, truncation_psi=0.7, mode="random", batch_size=1, class_index=-1,
               class_name=""):
        from .sgim_nodes.optimize import sample_source_ws

        label, input_name = (class_name, "class_name") if class_name.strip() else (class_index, "class_index")
        if mode == "mean":  # the single global average, for conditional generators too (as truncation uses)
            if label not in (-1, ""):
                raise node_error(self, input_name, "a class is only used in 'random' mode (the mean latent has "
                                                   "no class)")
            ws = generator.w_avg[None, None].expand(batch_size, generator.num_ws, -1)
        else:  # z is drawn on the CPU, so a seed gives the same image on every device
            with library_errors(self):  # class errors already name their input (labels_name)
                ws = sample_source_ws(generator, batch_size, seed, truncation=truncation_psi, labels=label,
                                      labels_name=f"{node_title(self)}, input '{input_name}'")
        return (wplus_value(ws, generator.name, getattr(generator, "ws_resolutions", None)),)


class SGIMOptimizeLatent:
    DESCRIPTION = ("The paper's edit: optimises the W+ code so that the generated image moves toward the "
                   "target in CLIP space while staying close to the source (lambda_sim) and, for faces, "
                   "keeping the identity (lambda_id). Shows a live preview and the loss terms; Cancel "
                   "stops it within one step.")
    CATEGORY = f"{CATEGORY_ROOT}"
    RETURN_TYPES = ("SGIM_WPLUS", "STRING")
    RETURN_NAMES = ("wplus", "loss_log")
    OUTPUT_TOOLTIPS = ("The edited W+ code.", "Loss terms of the last step as JSON (with the full history).")
    FUNCTION = "optimize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": ("SGIM_STYLEGAN", {"tooltip": "From Load StyleGAN."}),
                "clip": ("SGIM_CLIP", {"tooltip": "The CLIP model of the target's space (From Load CLIP)."}),
                "target": ("SGIM_EMBEDDING", {"tooltip": "What to edit toward: Embed Audio / Text / Image or Mix."}),
                "source": ("SGIM_WPLUS", {"tooltip": "The W+ code to edit (Source Latent or Load W+ Code)."}),
                "steps": ("INT", {"default": 300, "min": 1, "max": 5000, "tooltip": "Adam steps (paper: 300)."}),
                "lr": ("FLOAT", {"default": 0.1, "min": 0.0001, "max": 10.0, "step": 0.005, "round": 0.0001,
                                 "tooltip": "Learning rate (paper: 0.1 for landscapes, 0.05 for faces)."}),
                "lambda_sim": ("FLOAT", {"default": 0.002, "min": 0.0, "max": 10.0, "step": 0.001,
                                         "round": 0.0001, "tooltip":
                    "How strongly the code stays near the source (paper: 0.002 landscapes, 0.008 faces)."}),
                "lambda_id": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.001, "round": 0.0001,
                                        "tooltip": "Identity loss weight for faces (paper: 0.005); needs "
                                                   "identity_model. 0 skips it."}),
                "adaptive_mask": ("BOOLEAN", {"default": True, "tooltip":
                    "The paper's adaptive layer masking: per-layer weights learnt during the edit."}),
                "preview_every": ("INT", {"default": 10, "min": 0, "max": 1000, "tooltip":
                    "Show a preview image every N steps (0 = none)."}),
            },
            "optional": {
                "layer_mask": ("SGIM_LAYER_MASK", {"tooltip": "Which layers may change (Layer Mask); default all."}),
                "identity_model": ("SGIM_IDENTITY_MODEL", {"tooltip": "From Load Identity Model, for faces."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def optimize(self, generator, clip, target, source, steps=300, lr=0.1, lambda_sim=0.002, lambda_id=0.0,
                 adaptive_mask=True, preview_every=10, layer_mask=None, identity_model=None,
                 unique_id=None):
        from .sgim_nodes.optimize import optimize_latent

        targets, target_weights = target.vectors, target.weights
        device = torch_device()
        bar = progress_bar(steps, unique_id)
        history: list[dict] = []

        def report(info):
            throw_if_interrupted()  # Cancel pressed: ComfyUI's exception propagates out of the library
            terms = {k: float(v) for k, v in info.losses.items()}
            history.append(terms)
            preview = preview_tuple(info.preview) if info.preview is not None else None
            if bar is not None:
                bar.update_absolute(info.step, steps, preview)  # also a cancellation point
            # web/sgim.js shows these terms in the node's one readout (no duplicate progress text)
            send_to_browser(LOSS_EVENT, {"node": unique_id, "step": info.step, "total": steps, "terms": terms})

        models = models_on_device([generator, clip, identity_model], device)
        with torch.inference_mode(False), torch.enable_grad(), library_errors(self):
            try:
                # reuse_cpu_memory=False: its mallopt settings are process-wide and glibc cannot restore
                # them, so inside ComfyUI (every other node's allocations) the allocator is left alone.
                result = optimize_latent(
                    models[0], models[1], targets.clone().to(device), source_ws=source["ws"].clone().to(device),
                    target_weights=list(target_weights), steps=steps, lr=lr, lambda_sim=lambda_sim,
                    lambda_id=lambda_id,
                    layer_weights=layer_mask.layer_mask() if layer_mask is not None else None,
                    adaptive_mask=adaptive_mask, id_model=models[2],
                    callback=report, preview_every=preview_every, reuse_cpu_memory=False)
            finally:
                free_device_cache()
        log = json.dumps({"last": history[-1] if history else {}, "history": history})
        return (wplus_value(result.ws, generator.name, getattr(generator, "ws_resolutions", None)), log)


class SGIMStyleMix:
    DESCRIPTION = ("Combines two W+ codes layer by layer, like the paper's sound-and-text mixing: e.g. "
                   "coarse layers (layout) from the text edit and fine layers (colour, texture) from the "
                   "sound edit. A Layer Mask blends per layer: weight 1 takes wplus_b, 0 keeps wplus_a.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ("SGIM_WPLUS",)
    RETURN_NAMES = ("wplus",)
    OUTPUT_TOOLTIPS = ("The mixed W+ code.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "wplus_a": ("SGIM_WPLUS", {"tooltip": "Code whose layers are kept where B is not chosen."}),
                "wplus_b": ("SGIM_WPLUS", {"tooltip": "Code whose layers are taken where chosen."}),
                "layers_from_b": (LAYER_PRESETS[1:], {"default": "fine", "tooltip":
                    "Which layers come from wplus_b (coarse = 4-8 px: layout; middle = 16-32 px; fine = the "
                    "rest: colour, texture); 'custom' uses layer_mask, or else the custom_layers list."}),
                "custom_layers": ("STRING", {"default": "", "tooltip":
                    "For 'custom' without a layer_mask: indices of layers taken from B, e.g. '0-3, 8'."}),
            },
            "optional": {
                "layer_mask": ("SGIM_LAYER_MASK", {"tooltip": "Per-layer blend weights toward B ('custom')."}),
            },
        }

    def mix(self, wplus_a, wplus_b, layers_from_b="fine", custom_layers="", layer_mask=None):
        from .sgim_nodes.latents import style_mix
        from .sgim_nodes.optimize.layer_mask import parse_layer_list

        ws_a, ws_b = wplus_a["ws"], wplus_b["ws"]
        num_ws = ws_a.shape[1]
        with library_errors(self):
            if layers_from_b != "custom":
                blend = torch.tensor(preset_freedom(layers_from_b, num_ws, wplus_a.get("ws_resolutions")))
            elif layer_mask is not None:
                blend = layer_mask.blend()
            else:
                blend = torch.zeros(num_ws)
                blend[parse_layer_list(custom_layers, num_ws)] = 1.0
            mixed = style_mix(ws_a, ws_b, blend)
        return (wplus_value(mixed, wplus_a.get("generator", ""), wplus_a.get("ws_resolutions")),)


SEARCH_ALIASES = ["sound", "audio", "music", "stylegan", "sgim"]  # node search finds the pack by these


class SGIMStyleGANDecode:
    DESCRIPTION = "Renders W+ codes with the generator into a core IMAGE, to chain with any image node."
    CATEGORY = f"{CATEGORY_ROOT}"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("IMAGE [B, H, W, 3] in 0..1.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("SGIM_STYLEGAN", {"tooltip": "The generator the code belongs to."}),
            "wplus": ("SGIM_WPLUS", {"tooltip": "W+ code(s) to render."}),
            "noise_mode": (["const", "random", "none"], {"default": "const", "tooltip":
                "Per-pixel noise: 'const' = the generator's fixed noise (reproducible), 'random', or none."}),
        }}

    def decode(self, generator, wplus, noise_mode="const"):
        ws = check_wplus(wplus, generator, self, "wplus")
        device = torch_device()
        g = on_device(generator, device)
        images = []
        with torch.no_grad():
            for chunk in ws.split(4):  # bounded memory at 1024 px
                throw_if_interrupted()
                rendered = g.synthesis(chunk.to(device), noise_mode=noise_mode)
                if not bool(torch.isfinite(rendered).all()):  # never hand a NaN IMAGE to the next node
                    raise NonFiniteError("StyleGAN Decode, input 'wplus': the generator rendered NaN or infinite "
                                         "pixels from this code (a float16 generator overflowing, or a damaged "
                                         "code)", parameter="ws")
                images.append(to_comfy_image(rendered))
        return (torch.cat(images),)


# --------------------------------------------------------------------------------------------
# Music video: audio features -> keyframes -> per-frame W+ trajectory -> frames (+ trimmed audio,
# frame rate) for core CreateVideo / SaveVideo. The maths is in sgim_nodes.animate; one frame-count
# rule (sgim_nodes.animate.timeline) serves the features, the codes, the frames and the audio.
#
#   SGIM_AUDIO_FEATURES  MusicFeatures: AudioFeatures (timeline + per-frame curves) + the AUDIO
#   SGIM_KEYFRAMES       MusicKeyframes: Keyframes (times, codes, source) + MusicFeatures
#   SGIM_WPLUS from Music Trajectory carries "animation": {"trajectory", "offset", "count", "audio"}
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MusicFeatures:
    features: object  # sgim_nodes.animate.AudioFeatures
    audio: dict  # the core AUDIO they were computed from (not copied, never modified)


@dataclass(frozen=True)
class MusicKeyframes:
    keyframes: object  # sgim_nodes.animate.Keyframes
    music: MusicFeatures


def check_audio(audio, node, input_name: str = "audio") -> tuple[torch.Tensor, int]:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise node_error(node, input_name, "expected core AUDIO {'waveform': [B, C, T], 'sample_rate': int}")
    waveform = audio["waveform"]
    if waveform.dim() == 2:
        waveform = waveform[None]
    if waveform.dim() != 3 or waveform.shape[-1] == 0:
        raise node_error(node, input_name, f"expected a waveform [B, C, T] with samples, got shape "
                                           f"{list(waveform.shape)}")
    return waveform, int(audio["sample_rate"])


class SGIMAudioFeatures:
    DESCRIPTION = ("Per-frame audio features of a track at a frame rate: loudness, onsets (spectral flux), "
                   "brightness (spectral centroid) and low/mid/high band energies, smoothed with a centred "
                   "window (no lag) and scaled to 0..1. Feeds Music Keyframes; the curves are also plain "
                   "float lists (one value per frame) for other packs, and a plot.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES = ("SGIM_AUDIO_FEATURES", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "FLOAT", "IMAGE", "INT",
                    "STRING")
    RETURN_NAMES = ("features", "loudness", "onset", "centroid", "low", "mid", "high", "plot", "frame_count", "json")
    OUTPUT_TOOLTIPS = ("Features and timeline for Music Keyframes.",
                       "Loudness (RMS) per frame, a list of floats in 0..1.",
                       "Onset strength (spectral flux) per frame, 0..1.",
                       "Brightness (spectral centroid) per frame, 0..1.",
                       "Bass energy (20-250 Hz) per frame, 0..1.",
                       "Mid energy (250-2000 Hz) per frame, 0..1.",
                       "Treble energy (2-11 kHz) per frame, 0..1.",
                       "The curves as an image (onsets marked).",
                       "Frames of the video: round((end - start) x fps).",
                       "Everything as JSON (fps, start, frames, curves, onset times).")
    FUNCTION = "analyse"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The track (core AUDIO, e.g. from Load Audio); the first clip of a batch."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.01, "round": 0.001,
                              "tooltip": "Frames per second of the video (29.97 works)."}),
            "start_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.1,
                                        "tooltip": "Start the video at this second of the track."}),
            "end_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.1,
                                      "tooltip": "End at this second (0 = the end of the track)."}),
            "smoothing_seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                "Width of the centred smoothing window (0 = none); larger = calmer motion."}),
        }}

    def analyse(self, audio, fps=24.0, start_seconds=0.0, end_seconds=0.0, smoothing_seconds=0.1):
        from .sgim_nodes.animate import features_of_waveform, make_timeline, plot_features

        waveform, rate = check_audio(audio, self)
        with library_errors(self):
            timeline = make_timeline(waveform.shape[-1] / rate, fps, start_seconds, end_seconds or None)
            features = features_of_waveform(waveform[0], rate, timeline, smoothing_seconds)
        plot = torch.from_numpy(plot_features(features).astype("float32") / 255.0)[None]
        curves = [list(features.values[name]) for name in ("loudness", "onset", "centroid", "low", "mid", "high")]
        return (MusicFeatures(features, audio), *curves, plot, timeline.frames, features.to_json())


class SGIMMusicKeyframes:
    DESCRIPTION = ("Semantic keyframes of a music video: every keyframe_seconds (optionally moved onto onsets), "
                   "the sound around that moment (one encoder window, centred) and optionally a prompt "
                   "schedule become a target, and the optimiser turns it into a W+ code - the first from the "
                   "source with 'steps', each next one warm-started from the previous with 'keyframe_steps'. "
                   "Live preview; Cancel stops within one step.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES = ("SGIM_KEYFRAMES", "STRING")
    RETURN_NAMES = ("keyframes", "keyframe_log")
    OUTPUT_TOOLTIPS = ("Keyframe times and codes, for Music Trajectory.", "Keyframe times and targets as JSON.")
    FUNCTION = "optimize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": ("SGIM_STYLEGAN", {"tooltip": "From Load StyleGAN."}),
                "clip": ("SGIM_CLIP", {"tooltip": "The CLIP model of the audio encoder's space (From Load CLIP)."}),
                "audio_encoder": ("SGIM_AUDIO_ENCODER", {"tooltip": "From Load Audio Encoder."}),
                "features": ("SGIM_AUDIO_FEATURES", {"tooltip": "From Audio Features (the track and its timeline)."}),
                "source": ("SGIM_WPLUS", {"tooltip": "The image the video starts from (Source Latent); first code."}),
                "keyframe_seconds": ("FLOAT", {"default": 4.0, "min": 0.25, "max": 600.0, "step": 0.25,
                                               "tooltip": "Time between keyframes."}),
                "snap_to_onsets": ("BOOLEAN", {"default": False, "tooltip":
                    "Move each keyframe onto the nearest detected onset (within half an interval)."}),
                "steps": ("INT", {"default": 100, "min": 1, "max": 5000, "tooltip": "Optimiser steps of the first keyframe."}),
                "keyframe_steps": ("INT", {"default": 30, "min": 1, "max": 5000, "tooltip":
                    "Steps of each later keyframe (it starts from the previous keyframe's code)."}),
                "lr": ("FLOAT", {"default": 0.1, "min": 0.0001, "max": 10.0, "step": 0.005, "round": 0.0001,
                                 "tooltip": "Learning rate."}),
                "lambda_sim": ("FLOAT", {"default": 0.002, "min": 0.0, "max": 10.0, "step": 0.001, "round": 0.0001,
                                         "tooltip": "How strongly every keyframe stays near the source."}),
                "prompt_schedule": ("STRING", {"default": "", "multiline": True, "tooltip":
                    "Optional text mixed into the targets: one prompt, or a schedule "
                    "'0: a calm sea | 12.5: a storm at sea' (seconds of the track)."}),
                "text_weight": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05,
                                          "tooltip": "Weight of the prompt against the sound (0 = sound only)."}),
                "preview_every": ("INT", {"default": 10, "min": 0, "max": 1000, "tooltip":
                    "Show a preview image every N steps (0 = none)."}),
            },
            "optional": {
                "layer_mask": ("SGIM_LAYER_MASK", {"tooltip": "Which layers may change (Layer Mask); default all."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def optimize(self, generator, clip, audio_encoder, features, source, keyframe_seconds=4.0, snap_to_onsets=False,
                 steps=100, keyframe_steps=30, lr=0.1, lambda_sim=0.002, prompt_schedule="", text_weight=0.3,
                 preview_every=10, layer_mask=None, unique_id=None):
        from .sgim_nodes.animate import (KeyframeSettings, keyframe_targets, keyframe_times, optimize_keyframes,
                                         parse_prompt_schedule)
        from .sgim_nodes.audio import check_compatible, embed_audio

        source_ws = check_wplus(source, generator, self, "source")[:1]
        if layer_mask is not None and layer_mask.num_ws != generator.num_ws:
            raise node_error(self, "layer_mask", f"the mask has {layer_mask.num_ws} layers but generator "
                                                 f"{generator.name!r} has {generator.num_ws}; connect the Layer "
                                                 "Mask to this generator")
        try:
            check_compatible(audio_encoder, clip)
        except SGIMError as exc:
            raise node_error(self, "clip", str(exc), type(exc)) from None
        music = features
        timeline = music.features.timeline
        waveform, rate = check_audio(music.audio, self, "features")
        device = torch_device()
        g, c, encoder = models_on_device([generator, clip, audio_encoder], device)
        window = audio_encoder.settings.window_seconds
        track_seconds = waveform.shape[-1] / rate
        with library_errors(self):
            schedule = parse_prompt_schedule(prompt_schedule)
            times = keyframe_times(timeline, keyframe_seconds, music.features.onset_times, snap_to_onsets)
            targets, weights, labels = keyframe_targets(
                times, timeline,
                read_window=lambda start, seconds: waveform[0, :, int(round(start * rate)):
                                                            int(round((start + seconds) * rate))],
                embed_window=lambda piece: embed_audio(encoder, piece, rate, pool="first")[0],
                window_seconds=window, track_seconds=track_seconds,
                text_embed=lambda prompts: c.encode_text(prompts), schedule=schedule, text_weight=text_weight)

        total = steps + keyframe_steps * (len(times) - 1)
        bar = progress_bar(total, unique_id)
        done = {"steps": 0}

        def report(k, info):
            throw_if_interrupted()  # Cancel: ComfyUI's exception propagates out of the optimiser
            done["steps"] += 1
            preview = preview_tuple(info.preview) if info.preview is not None else None
            if bar is not None:
                bar.update_absolute(done["steps"], total, preview)
            send_to_browser(LOSS_EVENT, {"node": unique_id, "step": done["steps"], "total": total,
                                         "terms": {k2: float(v) for k2, v in info.losses.items()}})
            if info.step == 1:  # which keyframe is being optimised; the readout shows the loss terms
                show_node_text(f"keyframe {k + 1}/{len(times)}", unique_id)

        settings = KeyframeSettings(steps=steps, keyframe_steps=keyframe_steps, lr=lr, lambda_sim=lambda_sim,
                                    layer_weights=layer_mask.layer_mask() if layer_mask is not None else None,
                                    seed=0)
        with torch.inference_mode(False), torch.enable_grad(), library_errors(self):
            try:
                keyframes = optimize_keyframes(g, c, targets.clone(), source_ws.clone().to(device), times, settings,
                                               target_weights=weights, callback=report, preview_every=preview_every,
                                               labels=labels)
            finally:
                free_device_cache()
        log = json.dumps({"fps": timeline.fps, "frames": timeline.frames,
                          "keyframes": [{"seconds": t, "frame": round(t * timeline.fps), "target": label}
                                        for t, label in zip(times, labels)]})
        return (MusicKeyframes(keyframes, music), log)


class SGIMMusicTrajectory:
    DESCRIPTION = ("The W+ code of every video frame: a smooth path through the keyframes (cubic Hermite, no "
                   "jumps) that pulses with loudness and onsets (reactivity); with band_layers the bass drives "
                   "the coarse layers and the highs the fine ones. frame_offset / frame_count render a long "
                   "song in chunks. StyleGAN3 generators also rotate and shift slowly with the music.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES = ("SGIM_WPLUS", "INT")
    RETURN_NAMES = ("wplus", "frame_count")
    OUTPUT_TOOLTIPS = ("One W+ code per frame of the chunk, for Decode Frames.", "Frames in this chunk.")
    FUNCTION = "trajectory"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "keyframes": ("SGIM_KEYFRAMES", {"tooltip": "From Music Keyframes."}),
            "reactivity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 5.0, "step": 0.05, "tooltip":
                "How much the image pulses with the music: the displacement from the source grows by up to "
                "this factor on loud beats (0 = a smooth path only)."}),
            "band_layers": ("BOOLEAN", {"default": True, "tooltip":
                "Bass drives the coarse layers (layout), mids the middle ones, highs the fine ones (texture)."}),
            "rotation_degrees": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 180.0, "step": 0.5, "tooltip":
                "StyleGAN3 only: largest rotation, following the loudness."}),
            "translation": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 2.0, "step": 0.01, "tooltip":
                "StyleGAN3 only: largest shift, following brightness (x) and bass (y)."}),
            "frame_offset": ("INT", {"default": 0, "min": 0, "max": 10_000_000, "tooltip":
                "First frame of this chunk (render a long song in parts)."}),
            "frame_count": ("INT", {"default": 0, "min": 0, "max": 10_000_000, "tooltip":
                "Frames in this chunk (0 = up to the end)."}),
        }}

    def trajectory(self, keyframes, reactivity=0.5, band_layers=True, rotation_degrees=4.0, translation=0.05,
                   frame_offset=0, frame_count=0):
        from .sgim_nodes.animate import Trajectory, trim_audio

        music = keyframes.music
        with library_errors(self):
            path = Trajectory(keyframes.keyframes, music.features, reactivity=reactivity, band_layers=band_layers,
                              rotation_degrees=rotation_degrees, translation=translation)
            offset, count = path.timeline.check_range(frame_offset, frame_count)
            ws = path.codes(offset, count)
        waveform, rate = check_audio(music.audio, self, "keyframes")
        audio = {"waveform": trim_audio(waveform[:1], rate, path.timeline, offset, count), "sample_rate": rate}
        value = wplus_value(ws, keyframes.keyframes.generator)
        value["animation"] = {"trajectory": path, "offset": offset, "count": count, "audio": audio}
        return (value, count)


class SGIMDecodeFrames:
    DESCRIPTION = ("Renders the frames of a Music Trajectory in batches (bounded memory; Cancel stops within a "
                   "batch) and hands on the audio cut to exactly the same span and the frame rate, so that core "
                   "Create Video + Save Video give a video in sync with the track.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("The frames, IMAGE [frames, H, W, 3].", "The track cut to exactly frames / fps seconds.",
                       "Frames per second, for Create Video.")
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": ("SGIM_STYLEGAN", {"tooltip": "The generator the codes belong to."}),
                "wplus": ("SGIM_WPLUS", {"tooltip": "From Music Trajectory."}),
                "batch_size": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip":
                    "Frames rendered at once (more is faster on a GPU, needs more memory)."}),
                "size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 2, "tooltip":
                    "Scale the frames to this many pixels (0 = the generator's resolution)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def decode(self, generator, wplus, batch_size=8, size=0, unique_id=None):
        from .sgim_nodes.animate import iter_frames, resize

        animation = wplus.get("animation") if isinstance(wplus, dict) else None
        if animation is None:
            raise node_error(self, "wplus", "expected the codes of a Music Trajectory (they carry the frame timing "
                                            "and the audio); for other W+ codes use StyleGAN Decode")
        ws = check_wplus(wplus, generator, self, "wplus")
        trajectory, offset, count = animation["trajectory"], animation["offset"], animation["count"]
        if ws.shape[0] != count:
            raise node_error(self, "wplus", f"{ws.shape[0]} codes for a chunk of {count} frames")
        if size and not 16 <= size <= 8192:
            raise node_error(self, "size", f"expected 0 or 16..8192 pixels, got {size}")
        device = torch_device()
        g = on_device(generator, device)
        bar = progress_bar(count, unique_id)
        frames = []

        def cancelled() -> bool:
            throw_if_interrupted()  # raises ComfyUI's exception itself
            return False

        with library_errors(self):
            for first, images in iter_frames(g, trajectory, offset=offset, count=count, batch_size=batch_size,
                                             codes=ws, should_cancel=cancelled):
                frames.append(to_comfy_image(resize(images, size or None)))
                if bar is not None:
                    bar.update_absolute(first - offset + images.shape[0], count, preview_tuple(images[-1:]))
        return (torch.cat(frames), animation["audio"], float(trajectory.timeline.fps))


# --------------------------------------------------------------------------------------------
# Saving and loading W+ codes (not core's LATENT: a StyleGAN W+ code, named so nobody mixes them up)
# --------------------------------------------------------------------------------------------

W_PLUS_FOLDER = "sgim_wplus"  # subfolder of ComfyUI's input folder that Load W+ Code lists


class SGIMSaveWPlus:
    DESCRIPTION = ("Saves StyleGAN W+ codes (not a diffusion LATENT) as .safetensors in the output folder, with "
                   "the generator name and, like core's savers, the prompt and workflow in the metadata. "
                   f"Copy a file to input/{W_PLUS_FOLDER}/ to re-render or re-edit it with Load W+ Code.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "wplus": ("SGIM_WPLUS", {"tooltip": "W+ code(s) to save."}),
            "filename_prefix": ("STRING", {"default": "sgim/wplus", "tooltip":
                "File name prefix inside the output folder; a counter is appended (%date% etc. as in Save Image)."}),
        }, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, wplus, filename_prefix="sgim/wplus", prompt=None, extra_pnginfo=None):
        from .sgim_nodes.latents import check_wplus_values, save_wplus
        from .sgim_nodes.limits import check_file_name

        out_dir = output_directory()
        try:
            folder, name, counter, subfolder, _ = save_path(filename_prefix, out_dir)
        except Exception as exc:  # folder_paths refuses a prefix that leaves the output folder
            raise node_error(self, "filename_prefix", f"{filename_prefix!r}: {exc}") from None
        file_name = f"{name}_{counter:05}_.safetensors"
        with library_errors(self):  # every folder and the file name within what file systems take
            for part in [*subfolder.split("/"), file_name]:
                check_file_name("filename_prefix", part)
            check_wplus_values(wplus["ws"])  # before creating any folder: a refused code leaves nothing behind
        os.makedirs(folder, exist_ok=True)
        with library_errors(self):
            save_wplus(os.path.join(folder, file_name), wplus["ws"], generator_name=wplus.get("generator", ""),
                       extra_metadata=workflow_metadata(prompt, extra_pnginfo))
        shown = file_name if not subfolder else f"{subfolder}/{file_name}"
        return {"ui": {"text": [f"saved {shown}"],
                       "wplus": [{"filename": file_name, "subfolder": subfolder, "type": "output"}]}}


def save_path(filename_prefix: str, out_dir: str):
    """``(folder, file name, next counter, subfolder, prefix)`` as core's savers compute it."""
    fp = _folder_paths()
    if fp is not None:
        return fp.get_save_image_path(filename_prefix, out_dir)
    prefix = os.path.normpath(filename_prefix)  # without ComfyUI: the same rules, no %date% variables
    folder = os.path.join(out_dir, os.path.dirname(prefix))
    if os.path.commonpath((os.path.abspath(out_dir), os.path.abspath(folder))) != os.path.abspath(out_dir):
        raise ValueError("saving outside the output folder is not allowed")
    name = os.path.basename(prefix)
    taken = [int(f[len(name) + 1:].split("_")[0]) for f in (os.listdir(folder) if os.path.isdir(folder) else [])
             if f.startswith(name + "_") and f[len(name) + 1:].split("_")[0].isdigit()]
    return folder, name, max(taken, default=0) + 1, os.path.dirname(prefix), filename_prefix


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


def wplus_file_list() -> list[str]:
    """The .safetensors in input/sgim_wplus (one folder: no walk through the output tree)."""
    folder = os.path.join(input_directory(), W_PLUS_FOLDER)
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")
                  and os.path.isfile(os.path.join(folder, f)))


def wplus_file_path(name: str) -> str:
    return os.path.join(input_directory(), W_PLUS_FOLDER, os.path.basename(name))


class SGIMLoadWPlus:
    DESCRIPTION = (f"Loads StyleGAN W+ codes written by Save W+ Code, from input/{W_PLUS_FOLDER}/ "
                   "(copy saved files there).")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ("SGIM_WPLUS",)
    RETURN_NAMES = ("wplus",)
    OUTPUT_TOOLTIPS = ("The saved W+ code(s).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"w_plus_file": (wplus_file_list(), {
            "tooltip": f"A .safetensors written by Save W+ Code, in input/{W_PLUS_FOLDER}/."})}}

    @classmethod
    def IS_CHANGED(cls, w_plus_file):
        path = wplus_file_path(w_plus_file)
        if not os.path.isfile(path):
            return float("nan")
        mtime, size = file_signature(path)
        return f"{mtime}:{size}"

    @classmethod
    def VALIDATE_INPUTS(cls, w_plus_file):
        if not os.path.isfile(wplus_file_path(w_plus_file)):
            return f"{w_plus_file!r} is not in input/{W_PLUS_FOLDER}/"
        return True

    def load(self, w_plus_file):
        from .sgim_nodes.latents import load_wplus

        with library_errors(self):
            ws, generator_name, _ = load_wplus(wplus_file_path(w_plus_file))
        return (wplus_value(ws, generator_name),)


# --------------------------------------------------------------------------------------------
# Old node ids, so that saved workflows keep loading and running; hidden from search (DEPRECATED).
# --------------------------------------------------------------------------------------------

class SGIMDecode(SGIMStyleGANDecode):
    DEPRECATED = True
    DESCRIPTION = "Old id of StyleGAN Decode (SGIM); kept so that saved workflows still run."


class SGIMSaveLatent(SGIMSaveWPlus):
    DEPRECATED = True
    DESCRIPTION = "Old id of Save W+ Code (SGIM); kept so that saved workflows still run."


class SGIMLoadLatent(SGIMLoadWPlus):
    DEPRECATED = True
    DESCRIPTION = "Old id of Load W+ Code (SGIM); kept so that saved workflows still run."

    @classmethod
    def INPUT_TYPES(cls):  # the old input name, so old workflows' widget values still apply
        return {"required": {"latent_file": (wplus_file_list(), {
            "tooltip": f"A .safetensors written by Save W+ Code, in input/{W_PLUS_FOLDER}/."})}}

    @classmethod
    def IS_CHANGED(cls, latent_file):
        path = legacy_latent_path(latent_file)
        return f"{file_signature(path)}" if os.path.isfile(path) else float("nan")

    @classmethod
    def VALIDATE_INPUTS(cls, latent_file):  # also the old "name [output]" values, not in today's list
        if not os.path.isfile(legacy_latent_path(latent_file)):
            return f"{latent_file!r} not found (Load W+ Code reads input/{W_PLUS_FOLDER}/)"
        return True

    def load(self, latent_file):
        from .sgim_nodes.latents import load_wplus

        with library_errors(self):
            ws, generator_name, _ = load_wplus(legacy_latent_path(latent_file))
        return (wplus_value(ws, generator_name),)


def legacy_latent_path(name: str) -> str:
    """Where the old Load Latent found ``name``: "x [output]" in the output folder, else the input folder
    (and today's input/sgim_wplus)."""
    root, name = ((output_directory(), name[: -len(" [output]")]) if name.endswith(" [output]")
                  else (input_directory(), name))
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([os.path.realpath(root), path]) != os.path.realpath(root):
        return wplus_file_path(name)  # never outside the folder
    return path if os.path.isfile(path) else wplus_file_path(name)


# --------------------------------------------------------------------------------------------
# Bring your own picture: projection into W+ and pivotal tuning (library: sgim_nodes.project)
# --------------------------------------------------------------------------------------------

class SGIMLoadVGG(_Loader):
    FOLDER, INPUT_NAME = "sgim_vgg", "vgg_name"
    DESCRIPTION = ("Loads VGG16 (torchvision's vgg16-397923af.pth, read with weights_only) for the LPIPS "
                   "distance of Project Image; the calibrated LPIPS layers come from the lpips package.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = ("SGIM_LPIPS",)
    RETURN_NAMES = ("lpips",)
    OUTPUT_TOOLTIPS = ("LPIPS-VGG16 (frozen), for Project Image's 'lpips' distance.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vgg_name": (model_file_list("sgim_vgg"), {
            "tooltip": "vgg16-397923af.pth in models/sgim_vgg (python -m sgim_nodes download vgg16)."})}}

    def load(self, vgg_name):
        def load(path):
            from .sgim_nodes.project import load_lpips

            return load_lpips(path, device="cpu")

        return (self._load(vgg_name, load, "Load VGG16 (LPIPS)"),)


class SGIMProjectImage:
    DESCRIPTION = ("Brings your own picture: finds the W+ code whose image looks like it (W first, then W+, "
                   "NVlabs' projector recipe), then optionally fine-tunes a copy of the generator around that "
                   "code (pivotal tuning) so it reproduces the picture closely. Edit the code with the "
                   "returned generator: sound edits of real pictures look right only after tuning. "
                   "Shows a preview and the loss; Cancel stops it within one step.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ("SGIM_WPLUS", "SGIM_STYLEGAN", "IMAGE", "STRING")
    RETURN_NAMES = ("wplus", "generator", "projection", "report")
    OUTPUT_TOOLTIPS = ("The picture's W+ code (one per picture of the batch).",
                       "The generator to edit it with: the tuned copy (tune_steps > 0), a copy carrying the "
                       "fitted noise maps, or the input generator unchanged.",
                       "The code rendered by that generator.",
                       "PSNR per picture (before and after tuning) and the loss history, as JSON.")
    FUNCTION = "project"

    @classmethod
    def INPUT_TYPES(cls):
        from .sgim_nodes.project import DISTANCES, FIT_MODES

        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Your picture(s), e.g. from Load Image; any size, alpha ignored."}),
                "generator": ("SGIM_STYLEGAN", {"tooltip": "From Load StyleGAN (the original is never changed)."}),
                "distance": (list(DISTANCES), {"default": "lpips", "tooltip":
                    "lpips: the standard, needs Load VGG16; pixel: exact colours; multiscale: pixels on a "
                    "pyramid, no file needed; clip: content and style, needs clip."}),
                "steps": ("INT", {"default": 1000, "min": 1, "max": 10000, "tooltip":
                    "Projection steps: half in W, then W+ (NVlabs: 1000)."}),
                "tune_steps": ("INT", {"default": 350, "min": 0, "max": 5000, "tooltip":
                    "Pivotal tuning steps on a copy of the generator (PTI: 350); 0 = no tuning."}),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip":
                    "crop: the centred square of the picture; pad: the whole picture, border repeats its edges."}),
                "space": (["wplus", "w"], {"default": "wplus", "tooltip":
                    "wplus: W then W+ (closer fit); w: W only (stays closest to what the generator knows)."}),
                "lr": ("FLOAT", {"default": 0.1, "min": 0.0001, "max": 10.0, "step": 0.005, "round": 0.0001,
                                 "tooltip": "Peak learning rate in W (NVlabs: 0.1); W+ uses half of it."}),
                "pixel_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                    "Add this much pixel error to the distance (holds colours; tuning always adds 1)."}),
                "optimize_noise": (["auto", "on", "off"], {"default": "auto", "tooltip":
                    "Fit StyleGAN2's noise maps too (auto: when tuning; they live in the returned generator)."}),
                # Not named "seed": the frontend gives every "seed" a randomize control, which would re-run a
                # long projection on every queue; this one changes only when the user changes it.
                "init_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF,
                                      "tooltip": "Seed of the noise maps and the W jitter."}),
                "preview_every": ("INT", {"default": 10, "min": 0, "max": 1000, "tooltip":
                    "Show a preview every N steps (0 = none)."}),
            },
            "optional": {
                "lpips": ("SGIM_LPIPS", {"tooltip": "From Load VGG16 (LPIPS), for the 'lpips' distance."}),
                "clip": ("SGIM_CLIP", {"tooltip": "From Load CLIP, for the 'clip' distance."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def project(self, image, generator, distance="lpips", steps=1000, tune_steps=350, fit="crop", space="wplus",
                lr=0.1, pixel_weight=0.0, optimize_noise="auto", init_seed=0, preview_every=10, lpips=None, clip=None,
                unique_id=None):
        from .sgim_nodes.project import project_image

        if distance == "lpips" and lpips is None:
            raise node_error(self, "lpips", "the 'lpips' distance needs Load VGG16 (LPIPS) connected "
                                            "(vgg16-397923af.pth in models/sgim_vgg), or choose 'pixel', "
                                            "'multiscale' or 'clip'")
        if distance == "clip" and clip is None:
            raise node_error(self, "clip", "the 'clip' distance needs Load CLIP connected")
        device = torch_device()
        total = steps + tune_steps
        bar = progress_bar(total, unique_id)
        history: list[dict] = []

        def report(info):
            throw_if_interrupted()  # Cancel pressed: ComfyUI's exception propagates out of the library
            history.append({"phase": info.phase, "loss": info.loss})
            preview = preview_tuple(info.preview) if info.preview is not None else None
            if bar is not None:
                bar.update_absolute(info.step, total, preview)
            send_to_browser(LOSS_EVENT, {"node": unique_id, "step": info.step, "total": total,
                                         "terms": {f"{info.phase} loss": info.loss}})
            show_node_text(f"{info.phase} step {info.step}/{total}  loss {info.loss:.4f}", unique_id)

        models = models_on_device([generator, lpips, clip], device)
        with torch.inference_mode(False), torch.enable_grad(), library_errors(self):
            try:
                result = project_image(
                    models[0], image.clone(), distance=distance, lpips=models[1], clip=models[2],
                    steps=steps, space=space,
                    lr=lr, wplus_lr=lr / 2, pixel_weight=pixel_weight,
                    optimize_noise={"auto": None, "on": True, "off": False}[optimize_noise], fit=fit,
                    tune_steps=tune_steps, seed=init_seed, callback=report, preview_every=preview_every)
            finally:
                free_device_cache()
            out_generator = generator
            if result.generator is not None:
                out_generator = result.generator.to("cpu")
        log = json.dumps({"psnr_db": result.psnr, "psnr_db_before_tuning": result.psnr_before_tuning,
                          "tuned": tune_steps > 0, "history": history})
        return (wplus_value(result.ws, getattr(out_generator, "name", "")), out_generator,
                to_comfy_image(result.images), log)


NODE_CLASS_MAPPINGS = {
    "SGIMLoadStyleGAN": SGIMLoadStyleGAN,
    "SGIMLoadAudioEncoder": SGIMLoadAudioEncoder,
    "SGIMLoadCLIP": SGIMLoadCLIP,
    "SGIMLoadIdentityModel": SGIMLoadIdentityModel,
    "SGIMEmbedAudio": SGIMEmbedAudio,
    "SGIMEmbedText": SGIMEmbedText,
    "SGIMEmbedImage": SGIMEmbedImage,
    "SGIMMixEmbeddings": SGIMMixEmbeddings,
    "SGIMLayerMask": SGIMLayerMask,
    "SGIMSourceLatent": SGIMSourceLatent,
    "SGIMOptimizeLatent": SGIMOptimizeLatent,
    "SGIMStyleMix": SGIMStyleMix,
    "SGIMStyleGANDecode": SGIMStyleGANDecode,
    "SGIMSaveWPlus": SGIMSaveWPlus,
    "SGIMLoadWPlus": SGIMLoadWPlus,
    "SGIMDecode": SGIMDecode,
    "SGIMSaveLatent": SGIMSaveLatent,
    "SGIMLoadLatent": SGIMLoadLatent,
    "SGIMAudioFeatures": SGIMAudioFeatures,
    "SGIMMusicKeyframes": SGIMMusicKeyframes,
    "SGIMMusicTrajectory": SGIMMusicTrajectory,
    "SGIMDecodeFrames": SGIMDecodeFrames,
    "SGIMLoadVGG": SGIMLoadVGG,
    "SGIMProjectImage": SGIMProjectImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SGIMLoadStyleGAN": "Load StyleGAN (SGIM)",
    "SGIMLoadAudioEncoder": "Load Audio Encoder (SGIM)",
    "SGIMLoadCLIP": "Load CLIP (SGIM)",
    "SGIMLoadIdentityModel": "Load Identity Model (SGIM)",
    "SGIMEmbedAudio": "Embed Audio (SGIM)",
    "SGIMEmbedText": "Embed Text (SGIM)",
    "SGIMEmbedImage": "Embed Image (SGIM)",
    "SGIMMixEmbeddings": "Mix Embeddings (SGIM)",
    "SGIMLayerMask": "Layer Mask (SGIM)",
    "SGIMSourceLatent": "Source Latent (SGIM)",
    "SGIMOptimizeLatent": "Optimize Latent (SGIM)",
    "SGIMStyleMix": "Style Mix (SGIM)",
    "SGIMStyleGANDecode": "StyleGAN Decode (SGIM)",
    "SGIMSaveWPlus": "Save W+ Code (SGIM)",
    "SGIMLoadWPlus": "Load W+ Code (SGIM)",
    "SGIMDecode": "StyleGAN Decode (SGIM, old id)",
    "SGIMSaveLatent": "Save W+ Code (SGIM, old id)",
    "SGIMLoadLatent": "Load W+ Code (SGIM, old id)",
    "SGIMAudioFeatures": "Audio Features (SGIM)",
    "SGIMMusicKeyframes": "Music Keyframes (SGIM)",
    "SGIMMusicTrajectory": "Music Trajectory (SGIM)",
    "SGIMDecodeFrames": "Decode Frames (SGIM)",
    "SGIMLoadVGG": "Load VGG16 for LPIPS (SGIM)",
    "SGIMProjectImage": "Project Image (SGIM)",
}

for _cls in NODE_CLASS_MAPPINGS.values():
    _cls.SEARCH_ALIASES = SEARCH_ALIASES

register_model_folders()
register_routes()
