"""Latent edits: layer masks, source codes, the paper's optimisation, style mixing and decoding of W+ codes."""

from __future__ import annotations

import json


from ..sgim_nodes.optimize.rules import LayerFreedom
from ..sgim_nodes.options import node_input, node_inputs
from .host import (CATEGORY_ROOT, check_wplus, job_run, library_errors, models_on_device, node_title, on_device,
                   outputs, sockets, to_comfy_image, torch_device, wplus_value)

LAYER_PRESETS = ["all", "coarse", "middle", "fine", "custom"]


class SGIMLayerMask:
    DESCRIPTION = ("Chooses how freely each W+ layer of the generator may change during the edit: coarse "
                   "layers (4-8 px) hold pose and layout, middle ones (16-32 px) shapes and features, fine "
                   "ones colour and texture. Drag the bars (0 = frozen, 1 = free) or pick a preset.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("layer_mask", "SGIM_LAYER_MASK", "Per-layer freedom for Optimize Latent / blend weights for Style Mix."))
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
        from ..sgim_nodes.optimize.rules import generator_freedom, parse_freedom_json

        with library_errors(self):  # count, range and "every layer frozen" are the rulebook's own checks
            freedom = (generator_freedom(preset, generator) if preset != "custom"
                       else parse_freedom_json(weights, generator.num_ws, "weights"))
        return (LayerFreedom(tuple(freedom), generator.name),)


class SGIMSourceLatent:
    DESCRIPTION = ("The image to edit, as a W+ code: a random face/landscape from a seed (with truncation "
                   "toward the average), or the generator's average image.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(("wplus", "SGIM_WPLUS", "W+ code [batch, num_ws, w_dim]."))
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            **sockets("generator"),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the random z (batch item i uses the next draws of this seed)."}),
            "truncation_psi": node_input("truncation_psi"),
            "mode": (["random", "mean"], {"default": "random", "tooltip":
                "'random' draws z from the seed; 'mean' uses the average latent (seed ignored)."}),
            "batch_size": node_input("batch_size"),
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
        from ..sgim_nodes.jobs.edit import source_codes

        label, input_name = (class_name, "class_name") if class_name.strip() else (class_index, "class_index")
        with library_errors(self):  # class errors name their input (label_parameter)
            ws = source_codes(generator, mode, batch_size, seed, truncation_psi, label=label,
                              label_parameter=f"{node_title(self)}, input '{input_name}'")
        return (wplus_value(ws, generator.name, getattr(generator, "ws_resolutions", None)),)


class SGIMOptimizeLatent:
    DESCRIPTION = ("The paper's edit: optimises the W+ code so that the generated image moves toward the "
                   "target in CLIP space while staying close to the source (lambda_sim) and, for faces, "
                   "keeping the identity (lambda_id). Shows a live preview and the loss terms; Cancel "
                   "stops it within one step.")
    CATEGORY = f"{CATEGORY_ROOT}"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("wplus", "SGIM_WPLUS", "The edited W+ code."),
        ("loss_log", "STRING", "Loss terms of the last step as JSON (with the full history)."))
    FUNCTION = "optimize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **sockets("generator", "clip", "target", "source"),
                **node_inputs(None, "steps", "lr", "lambda_sim", "lambda_id"),
                "adaptive_mask": ("BOOLEAN", {"default": True, "tooltip":
                    "The paper's adaptive layer masking: per-layer weights learnt during the edit."}),
                "preview_every": node_input("preview_every"),
            },
            "optional": {
                **sockets("layer_mask"),
                "identity_model": ("SGIM_IDENTITY_MODEL", {"tooltip": "From Load Identity Model, for faces."}),
                "init": (["source", "instant"], {"default": "source", "tooltip":
                    "Where the optimisation starts: the source, or the best point along an instant edit "
                    "(Instant Edit's analysis, cached), which can save steps."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def optimize(self, generator, clip, target, source, steps=300, lr=0.1, lambda_sim=0.002, lambda_id=0.0,
                 adaptive_mask=True, preview_every=10, layer_mask=None, identity_model=None, init="source",
                 unique_id=None):
        from ..sgim_nodes.jobs.edit import LatentEdit, run_latent_edit
        from ..sgim_nodes.jobs.instant import WarmStartRequest, run_warm_start

        g, c, id_model = models_on_device([generator, clip, identity_model], torch_device())
        with job_run(self, unique_id) as run:
            init_ws = None
            if init == "instant":
                init_ws, _ = run_warm_start(WarmStartRequest(
                    g, c, target.vectors, source["ws"], target_weights=list(target.weights), lambda_sim=lambda_sim,
                    layer_freedom=None if layer_mask is None else list(layer_mask.freedom)), run)
            edit = run_latent_edit(LatentEdit(
                g, c, target.vectors, source["ws"], target_weights=list(target.weights), steps=steps, lr=lr,
                lambda_sim=lambda_sim, lambda_id=lambda_id,
                layer_weights=layer_mask.layer_mask() if layer_mask is not None else None,
                adaptive_mask=adaptive_mask, id_model=id_model, preview_every=preview_every, init_ws=init_ws), run)
        log = json.dumps({"last": edit.losses[-1] if edit.losses else {}, "history": edit.losses})
        return (wplus_value(edit.result.ws, generator.name, getattr(generator, "ws_resolutions", None)), log)


class SGIMStyleMix:
    DESCRIPTION = ("Combines two W+ codes layer by layer, like the paper's sound-and-text mixing: e.g. "
                   "coarse layers (layout) from the text edit and fine layers (colour, texture) from the "
                   "sound edit. A Layer Mask blends per layer: weight 1 takes wplus_b, 0 keeps wplus_a.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(("wplus", "SGIM_WPLUS", "The mixed W+ code."))
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
        from ..sgim_nodes.latents import style_mix
        from ..sgim_nodes.optimize.rules import blend_weights

        with library_errors(self):
            blend = blend_weights(layers_from_b, wplus_a["ws"].shape[1], wplus_a.get("ws_resolutions"), layer_mask,
                                  custom_layers)
            mixed = style_mix(wplus_a["ws"], wplus_b["ws"], blend)
        return (wplus_value(mixed, wplus_a.get("generator", ""), wplus_a.get("ws_resolutions")),)


class SGIMStyleGANDecode:
    DESCRIPTION = "Renders W+ codes with the generator into a core IMAGE, to chain with any image node."
    CATEGORY = f"{CATEGORY_ROOT}"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(("image", "IMAGE", "IMAGE [B, H, W, 3] in 0..1."))
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
        from ..sgim_nodes.jobs.edit import decode_codes

        ws = check_wplus(wplus, generator, self, "wplus")
        g = on_device(generator, torch_device())
        with job_run(self, free_cache=False) as run:
            return (to_comfy_image(decode_codes(g, ws, run, noise_mode)),)
