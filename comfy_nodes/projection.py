"""Bring your own picture: projection into W+ and pivotal tuning (the job: sgim_nodes.jobs.project)."""

from __future__ import annotations

import json

from ..sgim_nodes.options import node_input, node_inputs
from .host import (CATEGORY_ROOT, job_run, library_errors, models_on_device, outputs, to_comfy_image, torch_device,
                   wplus_value)


class SGIMProjectImage:
    DESCRIPTION = ("Brings your own picture: finds the W+ code whose image looks like it (W first, then W+, "
                   "NVlabs' projector recipe), then optionally fine-tunes a copy of the generator around that "
                   "code (pivotal tuning) so it reproduces the picture closely. Edit the code with the "
                   "returned generator: sound edits of real pictures look right only after tuning. "
                   "Shows a preview and the loss; Cancel stops it within one step.")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("wplus", "SGIM_WPLUS", "The picture's W+ code (one per picture of the batch)."),
        ("generator", "SGIM_STYLEGAN", "The generator to edit it with: the tuned copy (tune_steps > 0), a copy"
                                  " carrying the fitted noise maps, or the input generator unchanged."),
        ("projection", "IMAGE", "The code rendered by that generator."),
        ("report", "STRING", "PSNR per picture (before and after tuning) and the loss history, as JSON."))
    FUNCTION = "project"

    @classmethod
    def INPUT_TYPES(cls):
        from ..sgim_nodes.project import DISTANCES, FIT_MODES

        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Your picture(s), e.g. from Load Image; any size, alpha ignored."}),
                "generator": ("SGIM_STYLEGAN", {"tooltip": "From Load StyleGAN (the original is never changed)."}),
                "distance": (list(DISTANCES), {"default": "lpips", "tooltip":
                    "lpips: the standard, needs Load VGG16; pixel: exact colours; multiscale: pixels on a "
                    "pyramid, no file needed; clip: content and style, needs clip."}),
                **node_inputs("project", "steps", "tune_steps"),
                "fit": (list(FIT_MODES), {"default": "crop", "tooltip":
                    "crop: the centred square of the picture; pad: the whole picture, border repeats its edges."}),
                "space": (["wplus", "w"], {"default": "wplus", "tooltip":
                    "wplus: W then W+ (closer fit); w: W only (stays closest to what the generator knows)."}),
                **node_inputs("project", "lr", "pixel_weight"),
                "optimize_noise": (["auto", "on", "off"], {"default": "auto", "tooltip":
                    "Fit StyleGAN2's noise maps too (auto: when tuning; they live in the returned generator)."}),
                # Not named "seed": the frontend gives every "seed" a randomize control, which would re-run a
                # long projection on every queue; this one changes only when the user changes it.
                "init_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF,
                                      "tooltip": "Seed of the noise maps and the W jitter."}),
                "preview_every": node_input("preview_every"),
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
        from ..sgim_nodes.jobs.project import ProjectRequest, check_request, run_projection

        request = ProjectRequest(generator, image, distance=distance, lpips=lpips, clip=clip, steps=steps,
                                 space=space, lr=lr, pixel_weight=pixel_weight, optimize_noise=optimize_noise, fit=fit,
                                 tune_steps=tune_steps, seed=init_seed, preview_every=preview_every)
        with library_errors(self):
            check_request(request)  # a missing network is named before any model moves
        request.generator, request.lpips, request.clip = models_on_device([generator, lpips, clip], torch_device())
        with job_run(self, unique_id) as run:
            outcome = run_projection(request, run)
        result = outcome.result
        out_generator = result.generator.to("cpu") if result.generator is not None else generator
        return (wplus_value(result.ws, getattr(out_generator, "name", "")), out_generator,
                to_comfy_image(result.images), json.dumps(outcome.report()))
