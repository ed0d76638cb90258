"""Where model files live, and the known models users can fetch.

One registry for the command line (``download``, ``edit``'s defaults) and the ComfyUI nodes
(folder names). Folder keys match the ComfyUI ``folder_paths`` keys the nodes register, so a
file downloaded here is found by the nodes when the pack's ``models/`` folder is used:

    stylegan              StyleGAN2 generators (shared with other StyleGAN packs)
    sgim_audio_encoders   audio encoders (the released resnet18_57.pth, or ours)
    sgim_clip             CLIP models (OpenAI ViT-B-32.pt, open_clip files)
    sgim_identity         ArcFace IR-SE50 for the identity loss (faces only)
    sgim_vgg              VGG16 (torchvision layout) for the LPIPS distance of image projection

Only addresses and checksums that the publishers themselves give are recorded here; where a file
has no direct, stable address (Google Drive pages, for example) the entry says how to get it by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]

FOLDERS = {
    "stylegan": "StyleGAN2 generators (.pt rosinality, .pkl NVlabs stylegan2-ada-pytorch, .safetensors)",
    "sgim_audio_encoders": "audio encoders (.pth official, .safetensors ours)",
    "sgim_clip": "CLIP models (OpenAI .pt archive, open_clip .bin/.safetensors)",
    "sgim_identity": "ArcFace IR-SE50 identity model (model_ir_se50.pth)",
    "sgim_vgg": "VGG16 for the LPIPS distance of image projection (torchvision's vgg16-397923af.pth)",
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

    @property
    def default_path(self) -> Path:
        return models_dir() / self.folder / self.filename


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
        name="vgg16",
        filename="vgg16-397923af.pth",
        folder="sgim_vgg",
        description="torchvision's ImageNet VGG16, the trunk of the LPIPS distance used to project pictures",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af",  # torchvision publishes the sha256's first 8 hex digits in the file name; checked as a prefix
        source="torchvision model zoo (sha256 prefix from its file name)",
    ),
]}


def find_model_file(folder: str, name_or_path: str | os.PathLike | None, default: str | None = None) -> Path | None:
    """Resolve a user-given path, or a bare filename inside ``models_dir()/folder``; None if absent."""
    candidate = name_or_path or default
    if candidate is None:
        return None
    path = Path(candidate).expanduser()
    if path.is_file():
        return path
    in_folder = models_dir() / folder / path.name
    return in_folder if in_folder.is_file() else None
