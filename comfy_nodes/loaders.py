"""Loaders: model files from ComfyUI's model folders, loaded on the CPU, cached by ComfyUI while the file is unchanged."""

from __future__ import annotations

from .host import CATEGORY_ROOT, FileLoader, load_generator_file, model_file_list, outputs


class SGIMLoadStyleGAN(FileLoader):
    FOLDER, INPUT_NAME = "stylegan", "generator_name"
    DESCRIPTION = ("Loads a StyleGAN2 or StyleGAN3 generator from models/stylegan (rosinality .pt; NVlabs "
                   "stylegan2-ada / stylegan3 .pkl and TensorFlow StyleGAN2 .pkl, read without running their code; "
                   "conditional ones too; or our .safetensors).")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("generator", "SGIM_STYLEGAN", "The frozen generator; its W+ space has one row per synthesis layer."))
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"generator_name": (model_file_list("stylegan"), {
            "tooltip": "Generator file in models/stylegan (e.g. landscape.pt for LSUN 256, ffhq.pkl for faces)."})}}

    def load(self, generator_name):
        return (self._load(generator_name, load_generator_file, "Load StyleGAN"),)


class SGIMLoadAudioEncoder(FileLoader):
    FOLDER, INPUT_NAME = "sgim_audio_encoders", "encoder_name"
    DESCRIPTION = ("Loads an audio encoder that maps sound into a CLIP space (the paper's "
                   "resnet18_57.pth, or a .safetensors trained with `python -m sgim_nodes train`).")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("audio_encoder", "SGIM_AUDIO_ENCODER", "The audio encoder (frozen)."))
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"encoder_name": (model_file_list("sgim_audio_encoders"), {
            "tooltip": "Audio encoder file in models/sgim_audio_encoders."})}}

    def load(self, encoder_name):
        def load(path):
            from ..sgim_nodes.audio import load_audio_encoder

            encoder = load_audio_encoder(path, device="cpu")
            return encoder.eval().requires_grad_(False)

        return (self._load(encoder_name, load, "Load Audio Encoder"),)


class SGIMLoadCLIP(FileLoader):
    FOLDER, INPUT_NAME = "sgim_clip", "clip_name"
    DESCRIPTION = ("Loads a CLIP model (OpenAI ViT-B-32.pt, read without running its TorchScript "
                   "code, or an open_clip state dict) from models/sgim_clip. Nothing is downloaded.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("clip", "SGIM_CLIP", "The CLIP model whose space the audio encoder was aligned to."))
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
            from ..sgim_nodes.clip import load_clip

            return load_clip(path, model_name=model_name.strip() or None, device="cpu")

        return (self._load(clip_name, load, "Load CLIP"),)


class SGIMLoadIdentityModel(FileLoader):
    FOLDER, INPUT_NAME = "sgim_identity", "identity_name"
    DESCRIPTION = ("Loads the ArcFace IR-SE50 face-identity network (model_ir_se50.pth) used by the "
                   "identity loss of face edits; connect it to Optimize Latent and set lambda_id > 0.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("identity_model", "SGIM_IDENTITY_MODEL", "The identity network (frozen)."))
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"identity_name": (model_file_list("sgim_identity"), {
            "tooltip": "IR-SE50 file in models/sgim_identity (model_ir_se50.pth)."})}}

    def load(self, identity_name):
        def load(path):
            from ..sgim_nodes.optimize import load_id_model

            return load_id_model(path, device="cpu")

        return (self._load(identity_name, load, "Load Identity Model"),)


class SGIMLoadVGG(FileLoader):
    FOLDER, INPUT_NAME = "sgim_vgg", "vgg_name"
    DESCRIPTION = ("Loads VGG16 (torchvision's vgg16-397923af.pth, read with weights_only) for the LPIPS "
                   "distance of Project Image; the calibrated LPIPS layers come from the lpips package.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("lpips", "SGIM_LPIPS", "LPIPS-VGG16 (frozen), for Project Image's 'lpips' distance."))
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vgg_name": (model_file_list("sgim_vgg"), {
            "tooltip": "vgg16-397923af.pth in models/sgim_vgg (python -m sgim_nodes download vgg16)."})}}

    def load(self, vgg_name):
        def load(path):
            from ..sgim_nodes.project import load_lpips

            return load_lpips(path, device="cpu")

        return (self._load(vgg_name, load, "Load VGG16 (LPIPS)"),)
