"""Where model files live, and the known models users can fetch.

One registry for the command line (``download``, ``edit``'s defaults) and the ComfyUI nodes
(folder names). Folder keys match the ComfyUI ``folder_paths`` keys the nodes register, so a
file downloaded here is found by the nodes when the pack's ``models/`` folder is used:

    stylegan              StyleGAN2 and StyleGAN3 generators (shared with other StyleGAN packs)
    sgim_audio_encoders   audio encoders (the released resnet18_57.pth, or ours)
    sgim_clip             CLIP models (OpenAI ViT-B-32.pt, open_clip files)
    sgim_identity         ArcFace IR-SE50 for the identity loss (faces only)
    sgim_vgg              VGG16 (torchvision layout) for the LPIPS distance of image projection

Only addresses and checksums that the publishers themselves give are recorded here; where a file
has no direct, stable address (Google Drive pages, for example) the entry says how to get it by hand.

Environment:

    SGIM_MODELS_DIR       the models root (default: this pack's ``models/``)
    SGIM_OFFLINE=1        never touch the network (``edit`` then says what to download instead)
    SGIM_MODEL_BASE_URL   a mirror holding the same files as ``<base>/<folder>/<filename>``; the
                          publishers' checksums still apply
    SGIM_MODEL_INDEX      a JSON file ``{"name": {"url": ..., "sha256": ... or null}, ...}`` replacing
                          the address and checksum of the models it names (private mirrors, tests)
    SGIM_LAUNCHER         how printed commands start (``./sgim`` sets it to itself)
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]

FOLDERS = {
    "stylegan": "StyleGAN2 / StyleGAN3 generators (.pt rosinality, .pkl NVlabs stylegan2-ada-pytorch, stylegan3 or "
                "TensorFlow, .safetensors)",
    "sgim_audio_encoders": "audio encoders (.pth official, .safetensors ours)",
    "sgim_clip": "CLIP models (OpenAI .pt archive, open_clip .bin/.safetensors)",
    "sgim_identity": "ArcFace IR-SE50 identity model (model_ir_se50.pth)",
    "sgim_vgg": "VGG16 for the LPIPS distance of image projection (torchvision's vgg16-397923af.pth)",
}


# Folder key -> the file extensions its loaders read (the nodes' combos list only these).
MODEL_FOLDERS = {
    "stylegan": {".pt", ".pth", ".pkl", ".safetensors"},
    "sgim_audio_encoders": {".pt", ".pth", ".safetensors"},
    "sgim_clip": {".pt", ".pth", ".bin", ".safetensors"},
    "sgim_identity": {".pt", ".pth", ".safetensors"},
    "sgim_vgg": {".pt", ".pth"},
}


def models_dir() -> Path:
    """The pack's model folder; ``$SGIM_MODELS_DIR`` overrides it (e.g. ComfyUI's ``models/``)."""
    return Path(os.environ.get("SGIM_MODELS_DIR", PACK_ROOT / "models"))


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    folder: str
    description: str
    url: str | None = None
    # sha256 as published by the source (OpenAI puts it in the URL path); None when none is published.
    sha256: str | None = None
    manual: str | None = None  # how to get it by hand when there is no direct URL
    source: str = ""
    size: int | None = None  # bytes, where the publisher states it (a download must be exactly this long)

    @property
    def default_path(self) -> Path:
        return models_dir() / self.folder / self.filename


_NGC_STYLEGAN3 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/"
_NGC_STYLEGAN3_MODELS = {  # every file the NVlabs stylegan3 README lists ("u": unaligned data)
    "stylegan3-t-ffhq-1024x1024": "StyleGAN3-T FFHQ faces, 1024x1024",
    "stylegan3-t-ffhqu-1024x1024": "StyleGAN3-T FFHQ-U faces (unaligned), 1024x1024",
    "stylegan3-t-ffhqu-256x256": "StyleGAN3-T FFHQ-U faces (unaligned), 256x256",
    "stylegan3-r-ffhq-1024x1024": "StyleGAN3-R FFHQ faces, 1024x1024",
    "stylegan3-r-ffhqu-1024x1024": "StyleGAN3-R FFHQ-U faces (unaligned), 1024x1024",
    "stylegan3-r-ffhqu-256x256": "StyleGAN3-R FFHQ-U faces (unaligned), 256x256",
    "stylegan3-t-metfaces-1024x1024": "StyleGAN3-T MetFaces (art portraits), 1024x1024",
    "stylegan3-t-metfacesu-1024x1024": "StyleGAN3-T MetFaces-U (art portraits, unaligned), 1024x1024",
    "stylegan3-r-metfaces-1024x1024": "StyleGAN3-R MetFaces (art portraits), 1024x1024",
    "stylegan3-r-metfacesu-1024x1024": "StyleGAN3-R MetFaces-U (art portraits, unaligned), 1024x1024",
    "stylegan3-t-afhqv2-512x512": "StyleGAN3-T AFHQv2 animal faces, 512x512",
    "stylegan3-r-afhqv2-512x512": "StyleGAN3-R AFHQv2 animal faces, 512x512",
}

KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel(
        name="landscape",
        filename="landscape.pt",
        folder="stylegan",
        description="StyleGAN2 256x256 LSUN landscape generator used by the paper (rosinality format, 14 W+ layers)",
        url="https://kr.object.ncloudstorage.com/cvpr2022/landscape.pt",
        source="README of kuai-lab/sound-guided-semantic-image-manipulation (no checksum published)",
    ),
    KnownModel(
        name="audio-encoder",
        filename="resnet18_57.pth",
        folder="sgim_audio_encoders",
        description="the paper's released audio encoder (ResNet-18, aligned to CLIP ViT-B/32)",
        url="https://kr.object.ncloudstorage.com/cvpr2022/resnet18_57.pth",
        source="README of kuai-lab/sound-guided-semantic-image-manipulation (no checksum published)",
    ),
    KnownModel(
        name="clip-vit-b-32",
        filename="ViT-B-32.pt",
        folder="sgim_clip",
        description="OpenAI CLIP ViT-B/32, the model the paper's audio encoder is aligned to",
        url="https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        source="OpenAI CLIP release (the sha256 is part of OpenAI's URL)",
    ),
    KnownModel(
        name="ffhq",
        filename="ffhq.pkl",
        folder="stylegan",
        description="StyleGAN2 1024x1024 FFHQ faces (NVlabs stylegan2-ada-pytorch pickle, 18 W+ layers)",
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        source="NVlabs stylegan2-ada-pytorch pretrained networks (no checksum published)",
    ),
    KnownModel(
        name="ffhq-rosinality",
        filename="stylegan2-ffhq-config-f.pt",
        folder="stylegan",
        description="StyleGAN2 1024x1024 FFHQ (rosinality format) as used by StyleCLIP and the paper's face edits",
        manual="StyleCLIP's README links this file on Google Drive (file id 1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT); "
               "download it in a browser",
        source="orpatashnik/StyleCLIP README",
    ),
    KnownModel(
        name="ir-se50",
        filename="model_ir_se50.pth",
        folder="sgim_identity",
        description="ArcFace IR-SE50 (InsightFace_Pytorch weights) for the identity loss on faces",
        manual="the file StyleCLIP and pixel2style2pixel distribute as model_ir_se50.pth (TreB1eN's "
               "InsightFace_Pytorch IR-SE50); download it from those projects' pretrained-model links",
        source="TreB1eN/InsightFace_Pytorch, via StyleCLIP / pixel2style2pixel",
    ),
    KnownModel(
        name="wikiart",
        filename="wikiart-1024-stylegan3-t-17.2Mimg.pkl",
        folder="stylegan",
        description="WikiArt paintings, 1024x1024, StyleGAN3-T (NVlabs snapshot pickle; the music-to-painting "
                    "generator)",
        url="https://archive.org/download/wikiart-1024-stylegan3-t-17.2Mimg/wikiart-1024-stylegan3-t-17.2Mimg.pkl",
        source="archive.org item wikiart-1024-stylegan3-t-17.2Mimg, as listed in public projects' model tables "
               "(no checksum published)",
    ),
    KnownModel(
        name="lhq-256",
        filename="lhq-256-stylegan3-t-25Mimg.pkl",
        folder="stylegan",
        description="LHQ landscapes, 256x256, StyleGAN3-T (NVlabs snapshot pickle; the paper's landscape setting)",
        url="https://archive.org/download/lhq-256-stylegan3-t-25Mimg/lhq-256-stylegan3-t-25Mimg.pkl",
        source="archive.org item lhq-256-stylegan3-t-25Mimg, as listed in public projects' model tables "
               "(no checksum published)",
    ),
    *[KnownModel(
        name=stem,
        filename=f"{stem}.pkl",
        folder="stylegan",
        description=f"{description} (NVlabs StyleGAN3 snapshot pickle)",
        url=f"{_NGC_STYLEGAN3}{stem}.pkl",
        source="NVIDIA NGC StyleGAN3 release, as printed in the NVlabs stylegan3 README (no checksum published)",
    ) for stem, description in _NGC_STYLEGAN3_MODELS.items()],
    KnownModel(
        name="stylegan2-metfaces-1024x1024",
        filename="stylegan2-metfaces-1024x1024.pkl",
        folder="stylegan",
        description="StyleGAN2 MetFaces (art portraits), 1024x1024 (stylegan2-ada-pytorch pickle, 18 W+ layers)",
        url="https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
            "stylegan2-metfaces-1024x1024.pkl",
        source="NVIDIA NGC StyleGAN2 release, as printed in the NVlabs stylegan3 README (no checksum published)",
    ),
    KnownModel(
        name="wikiart-sg2-tf",
        filename="wikiart-stylegan2-tf.pkl",
        folder="stylegan",
        description="Peter Baylies' WikiArt StyleGAN2, unconditional (TensorFlow StyleGAN2 pickle)",
        manual="community model lists link this file on Google Drive (no direct address); download it in a "
               "browser and save it under this name",
        source="Peter Baylies (pbaylies/stylegan2), via community model lists (no checksum published)",
    ),
    KnownModel(
        name="wikiart-sg2-tf-conditional",
        filename="wikiart-stylegan2-tf-conditional.pkl",
        folder="stylegan",
        description="Peter Baylies' WikiArt StyleGAN2, conditional on 167 classes (TensorFlow StyleGAN2 pickle, "
                    "LabelConcat; choose the class with Source Latent's class_index or edit --class)",
        manual="community model lists link this file on Google Drive (no direct address); download it in a "
               "browser and save it under this name",
        source="Peter Baylies (pbaylies/stylegan2), via community model lists (no checksum published)",
    ),
    KnownModel(
        name="vgg16",
        filename="vgg16-397923af.pth",
        folder="sgim_vgg",
        description="torchvision's ImageNet VGG16, the trunk of the LPIPS distance used to project pictures",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af",  # torchvision publishes the sha256's first 8 hex digits in the file name; checked as a prefix
        source="torchvision model zoo (sha256 prefix from its file name)",
    ),
]}


def is_bare_name(name: str | os.PathLike) -> bool:
    """A plain file name (no folder part, not '.' or '..'): the only kind looked up in model folders."""
    text = os.fspath(name)
    return bool(text) and text not in (".", "..") and Path(text).name == text and "/" not in text \
        and (os.altsep is None or os.altsep not in text) and os.sep not in text


def file_in_folder(root: str | os.PathLike, name: str) -> Path | None:
    """``root/name`` if that is a file inside ``root`` once links and '..' are resolved; else None.

    One rule for every place a user-given name is joined to a folder (model folders, the nodes'
    input and output folders), so that no name reads outside its folder."""
    if not isinstance(name, str) or not name or "\x00" in name or os.path.isabs(name):
        return None
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, target]) != base or not os.path.isfile(target):
        return None
    return Path(root) / name  # the name as given (a link keeps its own name, e.g. for the model's stem)


def find_model_file(folder: str, name_or_path: str | os.PathLike | None, default: str | None = None) -> Path | None:
    """Resolve a user-given path, or a bare filename inside ``models_dir()/folder``; None if absent.

    A path with a folder part (``/data/g.pt``, ``./g.pt``) means exactly that file: when it does not
    exist the answer is None, never a same-named file from the model folder."""
    candidate = name_or_path or default
    if candidate is None:
        return None
    path = Path(candidate).expanduser()
    if path.is_file():
        return path
    if not is_bare_name(os.fspath(candidate)):
        return None
    return file_in_folder(models_dir() / folder, path.name)


def how_to_get(filename: str, folder: str) -> str:
    """One sentence on getting a missing model file: the download command of a known one, or where to put it."""
    known = next((m for m in KNOWN_MODELS.values() if m.filename == os.path.basename(str(filename))), None)
    if known is None:
        return f"Put the file into models/{folder}/ (docs/nodes.md lists where to get each kind)."
    return f"Get it with `{launcher()} download {known.name}` (writes {known.default_path})."


def offline() -> bool:
    """True when ``$SGIM_OFFLINE`` forbids network access (any value but empty, 0, false, no)."""
    return os.environ.get("SGIM_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def launcher() -> str:
    """The command prefix users type to run a command, as printed in messages: ``./sgim`` when the
    launcher started us, else this interpreter with ``-m sgim_nodes`` (works as typed either way)."""
    return os.environ.get("SGIM_LAUNCHER") or f"{shlex.quote(sys.executable)} -m sgim_nodes"


def model_source(model: KnownModel) -> KnownModel:
    """``model`` with the address and checksum the environment chooses (see the module docstring)."""
    from .errors import ParameterError

    base = os.environ.get("SGIM_MODEL_BASE_URL", "").strip()
    if base and model.url:
        model = replace(model, url=f"{base.rstrip('/')}/{model.folder}/{model.filename}")
    index_path = os.environ.get("SGIM_MODEL_INDEX", "").strip()
    if index_path:
        try:
            index = json.loads(Path(index_path).read_text())
        except (OSError, ValueError) as exc:
            raise ParameterError(f"SGIM_MODEL_INDEX: cannot read {index_path} as JSON ({exc})") from None
        entry = index.get(model.name) if isinstance(index, dict) else None
        if entry is not None:
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise ParameterError(f"SGIM_MODEL_INDEX: {index_path}: entry {model.name!r} needs a \"url\" string")
            model = replace(model, url=entry["url"], sha256=entry.get("sha256"))
    return model
