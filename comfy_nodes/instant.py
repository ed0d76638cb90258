"""Instant edits: a target moves the image in one render, through the generator's analysed StyleSpace directions."""

from __future__ import annotations

import json

from ..sgim_nodes.options import node_inputs
from .host import CATEGORY_ROOT, check_wplus, job_run, models_on_device, outputs, sockets, torch_device, wplus_value


class SGIMInstantEdit:
    DESCRIPTION = ("An edit without optimisation: the target (sound, text, image or a mix) becomes one step "
                   "along the style channels that move CLIP toward it. The generator is analysed once per "
                   "CLIP model (minutes; cached in models/sgim_instant), then every edit costs one render. "
                   "Less exact than Optimize Latent, which can start from it (init = instant).")
    CATEGORY = f"{CATEGORY_ROOT}"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("wplus", "SGIM_WPLUS", "The edited W+ code (for Decode, Style Mix, Save W+ Code)."),
        ("report", "STRING", "CLIP distance before/after, channels used and the analysis, as JSON."))
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **sockets("generator", "clip", "target", "source"),
                **node_inputs(None, "alpha", "beta"),
                "reference": (["source", "mean"], {"default": "source", "tooltip":
                    "What the target is measured from: the source image's own CLIP embedding (best measured), "
                    "or the generator's average image."}),
                "space": (["wplus", "style"], {"default": "wplus", "tooltip":
                    "wplus: move the W+ code along the relevant channels' direction; style: StyleCLIP's "
                    "per-channel edit, returned as the nearest W+ code."}),
            },
            "optional": {
                **sockets("layer_mask"),
                "neutral": ("SGIM_EMBEDDING", {"tooltip": "Optional: measure the target from this embedding "
                                                          "instead (StyleCLIP's neutral prompt, e.g. 'a landscape')."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def edit(self, generator, clip, target, source, alpha=1.0, beta=0.1, reference="source", space="wplus",
             layer_mask=None, neutral=None, unique_id=None):
        from ..sgim_nodes.jobs.instant import InstantEditRequest, run_instant_edit

        source_ws = check_wplus(source, generator, self, "source")
        g, c = models_on_device([generator, clip], torch_device())
        with job_run(self, unique_id) as run:
            outcome = run_instant_edit(InstantEditRequest(
                g, c, target.vectors, source_ws, target_weights=list(target.weights), alpha=alpha, beta=beta,
                reference="neutral" if neutral is not None else reference, space=space,
                neutral=None if neutral is None else neutral.vectors[:1, 0],
                layer_freedom=None if layer_mask is None else list(layer_mask.freedom)), run)
        result = outcome.result
        report = json.dumps({"clip_distance_before": outcome.distance_before.tolist(),
                             "clip_distance_after": outcome.distance_after.tolist(),
                             "channels": result.channels.tolist(), "cache_hit": outcome.cache_hit})
        return (wplus_value(result.ws, generator.name, getattr(generator, "ws_resolutions", None)), report)
