"""Embeddings: sounds, prompts and pictures as CLIP-space targets (SGIM_EMBEDDING), and their mixes."""

from __future__ import annotations

import logging

import torch

from ..sgim_nodes.optimize.targets import mix_targets, single_embedding
from ..sgim_nodes.options import node_inputs
from .host import CATEGORY_ROOT, library_errors, node_error, on_device, outputs, show_node_text, sockets, torch_device


class SGIMEmbedAudio:
    DESCRIPTION = ("Embeds a sound (core AUDIO, e.g. from Load Audio) into the CLIP space with the "
                   "audio encoder. Long sounds are cut into windows of the model's length and pooled.")
    CATEGORY = f"{CATEGORY_ROOT}/embed"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("embedding", "SGIM_EMBEDDING", "Unit-length CLIP-space target, one per clip of the AUDIO batch."))
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **sockets("audio_encoder"),
            "audio": ("AUDIO", {"tooltip": "Sound to embed (core AUDIO: waveform [B, C, T] + sample_rate)."}),
            **node_inputs(None, "start_seconds", "end_seconds", "hop_seconds"),
            "pool": (["mean", "first"], {"default": "mean", "tooltip":
                "How to combine the windows of a long sound: their mean, or only the first window "
                "(exactly the paper's inference)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def embed(self, audio_encoder, audio, start_seconds=0.0, end_seconds=0.0, hop_seconds=0.0, pool="mean",
              unique_id=None):
        from ..sgim_nodes.audio import embed_audio, measure_signal
        from ..sgim_nodes.jobs.music_video import check_audio

        encoder = on_device(audio_encoder, torch_device())
        with library_errors(self):
            check_audio(audio)
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
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("embedding", "SGIM_EMBEDDING", "Unit-length CLIP text embedding (one per line when batch_lines is on)."))
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
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("embedding", "SGIM_EMBEDDING", "Unit-length CLIP image embedding: one per image of the batch, or their mean."))
    FUNCTION = "embed"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("SGIM_CLIP", {"tooltip": "From Load CLIP."}),
            "image": ("IMAGE", {"tooltip": "Reference image(s), e.g. from Load Image."}),
        }, "optional": {
            "combine": (["each", "mean"], {"default": "each", "tooltip":
                "A batch of images (e.g. a video's frames): one target per image (a batch of edits), or their "
                "mean as one target."}),
        }}

    def embed(self, clip, image, combine="each"):
        from ..sgim_nodes.jobs.edit import embed_image

        clip = on_device(clip, torch_device())
        with library_errors(self):
            vectors = embed_image(clip, image, combine)
        return (single_embedding(vectors, "image", getattr(clip, "name", None)),)


class SGIMMixEmbeddings:
    DESCRIPTION = ("Combines up to three targets (e.g. a sound and a text) into one weighted objective: "
                   "the optimiser pulls the image toward each target with its weight.")
    CATEGORY = f"{CATEGORY_ROOT}/embed"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("embedding", "SGIM_EMBEDDING", "The weighted set of targets."))
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        def pair(letter, which):
            return {f"embedding_{letter}": ("SGIM_EMBEDDING", {"tooltip": f"{which} target."}),
                    **node_inputs(None, f"weight_{letter}", tooltips={f"weight_{letter}": f"Weight of the {which.lower()} target."})}

        return {"required": pair("a", "First (e.g. from Embed Audio)"),
                "optional": {**pair("b", "Second (e.g. from Embed Text)"), **pair("c", "Optional third")}}

    def mix(self, embedding_a, weight_a=1.0, embedding_b=None, weight_b=1.0, embedding_c=None, weight_c=1.0):
        parts = [(name, e, w) for name, e, w in (("embedding_a", embedding_a, weight_a),
                                                  ("embedding_b", embedding_b, weight_b),
                                                  ("embedding_c", embedding_c, weight_c)) if e is not None]
        with library_errors(self):  # the library's rule, as for --weights
            return (mix_targets(parts, parameter="weight_a"),)
