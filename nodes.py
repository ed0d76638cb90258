"""ComfyUI nodes of comfyui-sgim: the pack's node module.

The node classes live in ``comfy_nodes/`` by area (loaders, embeddings, latent edits, music video,
projection, files); each turns its inputs into a request of a job in ``sgim_nodes.jobs`` and runs it
with ``comfy_nodes.host.ComfyRun``. ``comfy_nodes/host.py`` is the only module that touches ComfyUI.
This module registers the classes under their node ids, old ids included (DEPRECATED: saved
workflows keep loading and running, hidden from search).
"""

from __future__ import annotations

from .comfy_nodes import host
from .comfy_nodes.embeddings import SGIMEmbedAudio, SGIMEmbedImage, SGIMEmbedText, SGIMMixEmbeddings
from .comfy_nodes.files import SGIMDecode, SGIMLoadLatent, SGIMLoadWPlus, SGIMSaveLatent, SGIMSaveWPlus
from .comfy_nodes.host import generator_info, model_file_path, models_on_device, on_device  # noqa: F401 (tests)
from .comfy_nodes.instant import SGIMInstantEdit
from .comfy_nodes.latent_edits import (SGIMLayerMask, SGIMOptimizeLatent, SGIMSourceLatent, SGIMStyleGANDecode,
                                       SGIMStyleMix)
from .comfy_nodes.loaders import SGIMLoadAudioEncoder, SGIMLoadCLIP, SGIMLoadIdentityModel, SGIMLoadStyleGAN, SGIMLoadVGG
from .comfy_nodes.music_video import SGIMAudioFeatures, SGIMDecodeFrames, SGIMMusicKeyframes, SGIMMusicTrajectory
from .comfy_nodes.projection import SGIMProjectImage
from .comfy_nodes.music_render import INPUT_FOR_PARAMETER as MUSIC_RENDER_INPUTS
from .comfy_nodes.music_render import SGIMMusicFolder, SGIMRenderMusicVideo, SGIMTempoBeats

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
    "SGIMInstantEdit": SGIMInstantEdit,
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
    "SGIMRenderMusicVideo": SGIMRenderMusicVideo,
    "SGIMTempoBeats": SGIMTempoBeats,
    "SGIMMusicFolder": SGIMMusicFolder,
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
    "SGIMInstantEdit": "Instant Edit (SGIM)",
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
    "SGIMRenderMusicVideo": "Render Music Video (SGIM)",
    "SGIMTempoBeats": "Tempo and Beats (SGIM)",
    "SGIMMusicFolder": "Music Videos from a Folder (SGIM)",
}

host.INPUT_FOR_PARAMETER.update(MUSIC_RENDER_INPUTS)
host.register_nodes(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
