"""ComfyUI nodes of comfyui-sgim: thin V1 node classes over the ``sgim_nodes`` library.

Everything here is glue: turning ComfyUI values (AUDIO dicts, IMAGE tensors, combo file names)
into library calls, finding model files through ``folder_paths``, caching loaded models,
reporting progress, and naming the node input when something is wrong. The maths lives in
``sgim_nodes``.

ComfyUI modules (``folder_paths``, ``comfy.*``, ``server``) are imported lazily through the small
adapter section below, so this file imports without ComfyUI (unit tests stub or skip them).

Values passed between nodes (all on the CPU, never modified by a consumer):

    SGIM_STYLEGAN        sgim_nodes.stylegan.Generator (frozen, float32)
    SGIM_AUDIO_ENCODER   the audio encoder module of sgim_nodes.audio
    SGIM_CLIP            sgim_nodes.clip.ClipModel
    SGIM_IDENTITY_MODEL  the ArcFace model of sgim_nodes.optimize
    SGIM_EMBEDDING       Embedding: weighted CLIP-space targets, vectors [B, K, D] + weights [K]
    SGIM_LAYER_MASK      LayerFreedom: per W+ layer, 0 (frozen) .. 1 (free)
    SGIM_WPLUS           dict {"ws": Tensor [B, num_ws, w_dim], "generator": generator name}
"""

from __future__ import annotations

import copy
import json
import os
import threading
import weakref
from dataclasses import dataclass

import torch

from .sgim_nodes.errors import ModelFileError, ParameterError, SGIMError

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
    """Register our model folders with ComfyUI (guide §6), keeping what the user already configured.

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
    fp = _folder_paths()
    path = fp.get_full_path(key, name) if fp is not None else os.path.join(PACK_DIR, "models", key, name)
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


def send_to_browser(event: str, data: dict, text: str | None = None, node_id: str | None = None) -> None:
    """A custom websocket message to the client that queued the prompt, plus optional node text."""
    try:
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return
    server.send_sync(event, data, server.client_id)
    if text is not None and node_id is not None:
        server.send_progress_text(text, node_id, server.client_id)


def register_routes() -> None:
    """``GET /sgim/generator_info?name=FILE`` for the layer-mask editor (must run at import)."""
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
            return web.json_response({"error": str(exc)})
        return web.json_response(info)


# --------------------------------------------------------------------------------------------
# Model cache shared by the loaders (and the generator-info route): keyed by path, valid while
# the file's mtime and size are unchanged, so a workflow re-run never reloads a model.
# --------------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str], tuple[tuple[int, int], object]] = {}
_CACHE_LOCK = threading.Lock()


def file_signature(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def cached_load(kind: str, path: str, load):
    """``load(path)`` once per (kind, path, mtime, size). Loads outside inference mode so that the
    weights can take part in autograd later (ComfyUI runs every node under inference_mode)."""
    signature = file_signature(path)
    with _CACHE_LOCK:
        hit = _CACHE.get((kind, path))
        if hit is not None and hit[0] == signature:
            return hit[1]
    with torch.inference_mode(False):
        model = load(path)
    with _CACHE_LOCK:
        _CACHE[(kind, path)] = (signature, model)
    return model


def clear_model_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def named_error(node: str, input_name: str, exc: Exception) -> SGIMError:
    """Re-word a library error so that ComfyUI's dialog names the node and input to fix."""
    cls = type(exc) if isinstance(exc, SGIMError) else ParameterError
    return cls(f"{node}, input '{input_name}': {exc}")


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
        raise ModelFileError(f"generator file {name!r} is not in models/stylegan (see docs/nodes.md for "
                             "where to get it), so the layers cannot be shown yet") from None
    generator = cached_load("stylegan", path, load_generator_file)
    groups = {preset: preset_freedom(preset, generator.num_ws) for preset in ("coarse", "middle", "fine")}
    return {"name": name, "num_ws": generator.num_ws, "resolution": generator.resolution,
            "w_dim": generator.w_dim, "groups": groups}


_DEVICE_COPIES: "weakref.WeakKeyDictionary[object, dict[str, object]]" = weakref.WeakKeyDictionary()


def on_device(model, device: torch.device):
    """``model`` (a module, or a wrapper with ``.to``/``.device``) on ``device``, without moving the
    loader's cached CPU object: a copy is made once per device and kept while the original lives."""
    current = getattr(model, "device", None)
    if current is None:
        param = next(iter(model.parameters()), None)
        current = param.device if param is not None else device
    if torch.device(current) == torch.device(device):
        return model
    with _CACHE_LOCK:
        copies = _DEVICE_COPIES.setdefault(model, {})
        if str(device) not in copies:
            with torch.inference_mode(False):
                moved = copy.deepcopy(model).to(device)
            copies[str(device)] = moved if moved is not None else model
        return copies[str(device)]


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


def wplus_value(ws: torch.Tensor, generator_name: str) -> dict:
    return {"ws": ws.detach().to("cpu", torch.float32).clone(), "generator": generator_name}


def check_wplus(wplus: dict, generator, node: str, input_name: str) -> torch.Tensor:
    """The W+ tensor of ``wplus`` if it fits ``generator``; else an error naming the node input."""
    from .sgim_nodes.latents import check_wplus_fits

    try:
        return check_wplus_fits(wplus["ws"], generator, what=f"code from generator {wplus.get('generator')!r}")
    except SGIMError as exc:
        raise named_error(node, input_name, exc) from None


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
    """Common behaviour of the four loaders: a combo of files, cached loading, IS_CHANGED by file."""

    FOLDER = ""
    INPUT_NAME = ""
    KIND = ""

    @classmethod
    def IS_CHANGED(cls, **inputs):
        fp_name = inputs.get(cls.INPUT_NAME)
        try:
            path = model_file_path(cls.FOLDER, fp_name, cls.__name__, cls.INPUT_NAME)
        except SGIMError:
            return float("nan")  # validation reports the missing file
        mtime, size = file_signature(path)
        return f"{mtime}:{size}"

    def _load(self, name: str, load, node_title: str, kind: str | None = None):
        path = model_file_path(self.FOLDER, name, node_title, self.INPUT_NAME)
        try:
            return cached_load(kind or self.KIND, path, load)
        except SGIMError as exc:
            raise named_error(node_title, self.INPUT_NAME, exc) from None


class SGIMLoadStyleGAN(_Loader):
    FOLDER, INPUT_NAME, KIND = "stylegan", "generator_name", "stylegan"
    DESCRIPTION = ("Loads a StyleGAN2 generator from models/stylegan (rosinality .pt, NVlabs "
                   "stylegan2-ada .pkl read without running its code, or our .safetensors).")
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
    FOLDER, INPUT_NAME, KIND = "sgim_audio_encoders", "encoder_name", "audio_encoder"
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
    FOLDER, INPUT_NAME, KIND = "sgim_clip", "clip_name", "clip"
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

        return (self._load(clip_name, load, "Load CLIP", kind=f"clip:{model_name.strip()}"),)


class SGIMLoadIdentityModel(_Loader):
    FOLDER, INPUT_NAME, KIND = "sgim_identity", "identity_name", "identity"
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
        }}

    def embed(self, audio_encoder, audio, start_seconds=0.0, end_seconds=0.0, hop_seconds=0.0, pool="mean"):
        from .sgim_nodes.audio import embed_audio

        node = "Embed Audio"
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise ParameterError(f"{node}, input 'audio': expected core AUDIO "
                                 "{'waveform': [B, C, T], 'sample_rate': int}")
        if end_seconds and end_seconds <= start_seconds:
            raise ParameterError(f"{node}, input 'end_seconds': {end_seconds} must be after "
                                 f"start_seconds {start_seconds} (or 0 for the end of the sound)")
        waveform = audio["waveform"]
        encoder = on_device(audio_encoder, torch_device())
        try:
            vectors = embed_audio(encoder, waveform, int(audio["sample_rate"]), pool=pool,
                                  hop_seconds=hop_seconds or None,
                                  start_seconds=start_seconds or None, end_seconds=end_seconds or None)
        except SGIMError as exc:
            raise named_error(node, "audio", exc) from None
        clip_model = (getattr(audio_encoder, "config", None) or {}).get("clip_model")
        return (single_embedding(vectors, "audio", clip_model),)


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
            raise ParameterError("Embed Text, input 'text': the prompt is empty")
        with torch.no_grad():
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
        if image.dim() != 4 or image.shape[-1] not in (3, 4):
            raise ParameterError(f"Embed Image, input 'image': expected IMAGE [B, H, W, 3], got {list(image.shape)}")
        with torch.no_grad():
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
        total = sum(weights)  # relative weights: the CLIP term keeps its scale against lambda_sim/lambda_id
        return (Embedding(torch.cat(vectors, dim=1).clone(), tuple(w / total for w in weights), tuple(labels),
                          clip_model),)


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
        """The optimiser's LayerMask (similarity weights g and frozen rows)."""
        from .sgim_nodes.optimize.layer_mask import LayerMask

        frozen = [f <= 0 for f in self.freedom]
        return LayerMask.from_lists([1.0 / f if f > 0 else 0.0 for f in self.freedom], frozen)

    def blend(self) -> torch.Tensor:
        return torch.tensor(self.freedom, dtype=torch.float32)


def preset_freedom(preset: str, num_ws: int) -> list[float]:
    from .sgim_nodes.optimize.layer_mask import preset_layers

    chosen = set(preset_layers(preset, num_ws))
    return [1.0 if i in chosen else 0.0 for i in range(num_ws)]


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
        node = "Layer Mask"
        if preset != "custom":
            try:
                freedom = preset_freedom(preset, generator.num_ws)
            except SGIMError as exc:
                raise named_error(node, "preset", exc) from None
            if not any(freedom):
                raise ParameterError(f"{node}, input 'preset': '{preset}' selects no layer of generator "
                                     f"{generator.name!r} ({generator.num_ws} W+ layers, {generator.resolution} px)")
            return (LayerFreedom(tuple(freedom), generator.name),)
        try:
            values = json.loads(weights) if weights.strip() else None
        except json.JSONDecodeError as exc:
            raise ParameterError(f"{node}, input 'weights': not valid JSON ({exc}); expected a list of "
                                 f"{generator.num_ws} numbers") from None
        if (not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and 0 <= v <= 1 for v in values)):
            raise ParameterError(f"{node}, input 'weights': expected a JSON list of {generator.num_ws} numbers "
                                 f"in [0, 1], got {weights[:80]!r}")
        if len(values) != generator.num_ws:
            raise ParameterError(f"{node}, input 'weights': {len(values)} weights given, but generator "
                                 f"{generator.name!r} has {generator.num_ws} W+ layers")
        if not any(values):
            raise ParameterError(f"{node}, input 'weights': every layer is 0 (frozen), nothing could change")
        return (LayerFreedom(tuple(float(v) for v in values), generator.name),)


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
        }}

    def sample(self, generator, seed=0, truncation_psi=0.7, mode="random", batch_size=1):
        from .sgim_nodes.optimize import sample_source_ws

        if mode == "mean":
            ws = generator.w_avg[None, None].expand(batch_size, generator.num_ws, -1)
        else:  # z is drawn on the CPU, so a seed gives the same image on every device
            ws = sample_source_ws(generator, batch_size, seed, truncation=truncation_psi)
        return (wplus_value(ws, generator.name),)


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
                "source": ("SGIM_WPLUS", {"tooltip": "The W+ code to edit (Source Latent or Load Latent)."}),
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
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed for the optimiser's noise; change it to force a re-run."}),
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
                 adaptive_mask=True, seed=0, preview_every=10, layer_mask=None, identity_model=None,
                 unique_id=None):
        from .sgim_nodes.optimize import optimize_latent

        node = "Optimize Latent"
        source_ws = check_wplus(source, generator, node, "source")
        if target.dim != clip.embed_dim:
            raise ParameterError(
                f"{node}, input 'clip': the target is a {target.dim}-d embedding (audio encoder aligned to "
                f"{target.clip_model or 'another CLIP'}), but this CLIP model has {clip.embed_dim} dimensions; "
                "load the CLIP model the audio encoder was trained with")
        if layer_mask is not None and layer_mask.num_ws != generator.num_ws:
            raise ParameterError(
                f"{node}, input 'layer_mask': the mask has {layer_mask.num_ws} layers but generator "
                f"{generator.name!r} has {generator.num_ws}; connect the Layer Mask to this generator")
        if lambda_id > 0 and identity_model is None:
            raise ParameterError(f"{node}, input 'identity_model': lambda_id is {lambda_id} but no identity "
                                 "model is connected (connect Load Identity Model, or set lambda_id to 0)")
        targets, target_weights = target.vectors, target.weights
        if targets.shape[0] not in (1, source_ws.shape[0]) and source_ws.shape[0] != 1:
            raise ParameterError(f"{node}, input 'target': batch of {targets.shape[0]} targets does not match "
                                 f"the batch of {source_ws.shape[0]} source codes")

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
            text = f"step {info.step}/{steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in terms.items())
            send_to_browser(LOSS_EVENT, {"node": unique_id, "step": info.step, "total": steps, "terms": terms},
                            text=text, node_id=unique_id)

        with torch.inference_mode(False), torch.enable_grad():
            try:
                result = optimize_latent(
                    on_device(generator, device), on_device(clip, device),
                    targets.clone().to(device), source_ws=source_ws.clone().to(device),
                    target_weights=list(target_weights), steps=steps, lr=lr, lambda_sim=lambda_sim,
                    lambda_id=lambda_id,
                    layer_weights=layer_mask.layer_mask() if layer_mask is not None else None,
                    adaptive_mask=adaptive_mask,
                    id_model=on_device(identity_model, device) if identity_model is not None else None,
                    seed=seed, callback=report, preview_every=preview_every)
            except SGIMError as exc:
                raise named_error(node, "target", exc) from None
            finally:
                free_device_cache()
        log = json.dumps({"last": history[-1] if history else {}, "history": history})
        return (wplus_value(result.ws, generator.name), log)


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

        node = "Style Mix"
        ws_a, ws_b = wplus_a["ws"], wplus_b["ws"]
        if ws_a.shape[1:] != ws_b.shape[1:]:
            raise ParameterError(f"{node}, input 'wplus_b': codes of shape {list(ws_b.shape)} and "
                                 f"{list(ws_a.shape)} come from different generators")
        num_ws = ws_a.shape[1]
        try:
            if layers_from_b != "custom":
                blend = torch.tensor(preset_freedom(layers_from_b, num_ws))
            elif layer_mask is not None:
                if layer_mask.num_ws != num_ws:
                    raise ParameterError(f"the mask has {layer_mask.num_ws} layers (generator "
                                         f"{layer_mask.generator!r}), the codes have {num_ws}")
                blend = layer_mask.blend()
            else:
                blend = torch.zeros(num_ws)
                blend[parse_layer_list(custom_layers, num_ws)] = 1.0
        except SGIMError as exc:
            input_name = "layers_from_b" if layers_from_b != "custom" else (
                "layer_mask" if layer_mask is not None else "custom_layers")
            raise named_error(node, input_name, exc) from None
        try:
            mixed = style_mix(ws_a, ws_b, blend)
        except SGIMError as exc:
            raise named_error(node, "wplus_b", exc) from None
        return (wplus_value(mixed, wplus_a.get("generator", "")),)


class SGIMDecode:
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
        ws = check_wplus(wplus, generator, "StyleGAN Decode", "wplus")
        device = torch_device()
        g = on_device(generator, device)
        images = []
        with torch.no_grad():
            for chunk in ws.split(4):  # bounded memory at 1024 px
                throw_if_interrupted()
                images.append(to_comfy_image(g.synthesis(chunk.to(device), noise_mode=noise_mode)))
        return (torch.cat(images),)


# --------------------------------------------------------------------------------------------
# Saving and loading W+ codes
# --------------------------------------------------------------------------------------------

class SGIMSaveLatent:
    DESCRIPTION = ("Saves W+ codes as .safetensors in the output folder (generator name in the metadata), "
                   "to re-render or re-edit later with Load Latent.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "wplus": ("SGIM_WPLUS", {"tooltip": "W+ code(s) to save."}),
            "filename_prefix": ("STRING", {"default": "sgim/latent", "tooltip":
                "File name prefix inside the output folder; a counter is appended."}),
        }}

    def save(self, wplus, filename_prefix="sgim/latent"):
        from .sgim_nodes.latents import save_wplus

        out_dir = os.path.realpath(output_directory())
        target_dir = os.path.realpath(os.path.join(out_dir, os.path.dirname(filename_prefix)))
        if os.path.commonpath([out_dir, target_dir]) != out_dir:
            raise ParameterError(f"Save Latent, input 'filename_prefix': {filename_prefix!r} leaves the output folder")
        base = os.path.basename(filename_prefix) or "latent"
        os.makedirs(target_dir, exist_ok=True)
        counter = 1 + max([int(f[len(base) + 1:-len(".safetensors")]) for f in os.listdir(target_dir)
                           if f.startswith(base + "_") and f.endswith(".safetensors")
                           and f[len(base) + 1:-len(".safetensors")].isdigit()] or [0])
        name = f"{base}_{counter:05d}.safetensors"
        save_wplus(os.path.join(target_dir, name), wplus["ws"], generator_name=wplus.get("generator", ""))
        subfolder = os.path.relpath(target_dir, out_dir)
        shown = name if subfolder == "." else f"{subfolder}/{name}"
        return {"ui": {"text": [f"saved {shown}"]}}


def latent_file_list() -> list[str]:
    """Saved W+ files in the input and output folders, annotated the ComfyUI way ("x [output]")."""
    names = []
    for root, tag in ((input_directory(), ""), (output_directory(), " [output]")):
        if not os.path.isdir(root):
            continue
        for folder, _, files in os.walk(root):
            for f in files:
                if f.endswith(".safetensors"):
                    rel = os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
                    names.append(rel + tag)
    return sorted(names)


def latent_file_path(name: str) -> str:
    fp = _folder_paths()
    if fp is not None:
        return fp.get_annotated_filepath(name)
    if name.endswith(" [output]"):
        return os.path.join(output_directory(), name[: -len(" [output]")])
    return os.path.join(input_directory(), name)


class SGIMLoadLatent:
    DESCRIPTION = "Loads W+ codes saved by Save Latent (from the input or output folder)."
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES = ("SGIM_WPLUS",)
    RETURN_NAMES = ("wplus",)
    OUTPUT_TOOLTIPS = ("The saved W+ code(s).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent_file": (latent_file_list(), {
            "tooltip": "A .safetensors written by Save Latent ('[output]' = in the output folder)."})}}

    @classmethod
    def IS_CHANGED(cls, latent_file):
        path = latent_file_path(latent_file)
        if not os.path.isfile(path):
            return float("nan")
        mtime, size = file_signature(path)
        return f"{mtime}:{size}"

    def load(self, latent_file):
        from .sgim_nodes.latents import load_wplus

        try:
            ws, generator_name, _ = load_wplus(latent_file_path(latent_file))
        except SGIMError as exc:
            raise named_error("Load Latent", "latent_file", exc) from None
        return (wplus_value(ws, generator_name),)


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
    "SGIMDecode": SGIMDecode,
    "SGIMSaveLatent": SGIMSaveLatent,
    "SGIMLoadLatent": SGIMLoadLatent,
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
    "SGIMDecode": "StyleGAN Decode (SGIM)",
    "SGIMSaveLatent": "Save Latent (SGIM)",
    "SGIMLoadLatent": "Load Latent (SGIM)",
}

# --------------------------------------------------------------------------------------------
# Bring your own picture: projection into W+ and pivotal tuning (library: sgim_nodes.project)
# --------------------------------------------------------------------------------------------

class SGIMLoadVGG(_Loader):
    FOLDER, INPUT_NAME, KIND = "sgim_vgg", "vgg_name", "lpips_vgg"
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
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
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
                lr=0.1, pixel_weight=0.0, optimize_noise="auto", seed=0, preview_every=10, lpips=None, clip=None,
                unique_id=None):
        from .sgim_nodes.project import project_image

        node = "Project Image"
        if distance == "lpips" and lpips is None:
            raise ParameterError(f"{node}, input 'lpips': the 'lpips' distance needs Load VGG16 (LPIPS) connected "
                                 "(vgg16-397923af.pth in models/sgim_vgg), or choose 'pixel', 'multiscale' or 'clip'")
        if distance == "clip" and clip is None:
            raise ParameterError(f"{node}, input 'clip': the 'clip' distance needs Load CLIP connected")
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
                                         "terms": {f"{info.phase} loss": info.loss}},
                            text=f"{info.phase} step {info.step}/{total}  loss {info.loss:.4f}", node_id=unique_id)

        inputs = {"steps": "steps", "tune_steps": "tune_steps", "lr": "lr", "wplus_lr": "lr", "image": "image",
                  "fit": "fit", "seed": "seed", "pixel_weight": "pixel_weight", "distance": "distance",
                  "clip": "clip", "generator": "generator", "tune_lr": "tune_steps"}
        with torch.inference_mode(False), torch.enable_grad():
            try:
                result = project_image(
                    on_device(generator, device), image.clone(), distance=distance,
                    lpips=on_device(lpips, device) if lpips is not None else None,
                    clip=on_device(clip, device) if clip is not None else None, steps=steps, space=space,
                    lr=lr, wplus_lr=lr / 2, pixel_weight=pixel_weight,
                    optimize_noise={"auto": None, "on": True, "off": False}[optimize_noise], fit=fit,
                    tune_steps=tune_steps, seed=seed, callback=report, preview_every=preview_every)
            except SGIMError as exc:
                raise named_error(node, inputs.get(exc.parameter or "", "image"), exc) from None
            finally:
                free_device_cache()
            out_generator = generator
            if result.generator is not None:
                out_generator = result.generator.to("cpu")
        log = json.dumps({"psnr_db": result.psnr, "psnr_db_before_tuning": result.psnr_before_tuning,
                          "tuned": tune_steps > 0, "history": history})
        return (wplus_value(result.ws, getattr(out_generator, "name", "")), out_generator,
                to_comfy_image(result.images), log)


NODE_CLASS_MAPPINGS.update({"SGIMLoadVGG": SGIMLoadVGG, "SGIMProjectImage": SGIMProjectImage})
NODE_DISPLAY_NAME_MAPPINGS.update({"SGIMLoadVGG": "Load VGG16 for LPIPS (SGIM)",
                                   "SGIMProjectImage": "Project Image (SGIM)"})

register_model_folders()
register_routes()
