"""Files: W+ codes saved to the output folder and loaded from input/sgim_wplus (not core's LATENT: a
StyleGAN W+ code, named so nobody mixes them up), and the old node ids of those nodes."""

from __future__ import annotations

import os

from .host import (CATEGORY_ROOT, file_signature, input_directory, library_errors, node_error, output_directory,
                   outputs, save_path, workflow_metadata, wplus_value)
from .latent_edits import SGIMStyleGANDecode

W_PLUS_FOLDER = "sgim_wplus"  # subfolder of ComfyUI's input folder that Load W+ Code lists


class SGIMSaveWPlus:
    DESCRIPTION = ("Saves StyleGAN W+ codes (not a diffusion LATENT) as .safetensors in the output folder, with "
                   "the generator name and, like core's savers, the prompt and workflow in the metadata. Files are "
                   "numbered as Save Image numbers its pictures: with the same prefix in one run, the code and "
                   "the picture get the same number (<prefix>_00001.safetensors beside <prefix>_00001_.png); an "
                   "existing file is never overwritten. "
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
        from ..sgim_nodes.latents import check_wplus_values, save_wplus
        from ..sgim_nodes.limits import check_file_name
        from ..sgim_nodes.node_values import paired_wplus_name

        out_dir = output_directory()
        try:
            folder, name, counter, subfolder, _ = save_path(filename_prefix, out_dir)
        except Exception as exc:  # folder_paths refuses a prefix that leaves the output folder
            raise node_error(self, "filename_prefix", f"{filename_prefix!r}: {exc}") from None
        file_name = paired_wplus_name(folder, name, counter)
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


def wplus_file_list() -> list[str]:
    """The .safetensors in input/sgim_wplus (one folder: no walk through the output tree)."""
    folder = os.path.join(input_directory(), W_PLUS_FOLDER)
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")
                  and os.path.isfile(os.path.join(folder, f)))


class SGIMLoadWPlus:
    DESCRIPTION = (f"Loads StyleGAN W+ codes written by Save W+ Code, from input/{W_PLUS_FOLDER}/ "
                   "(copy saved files there).")
    CATEGORY = f"{CATEGORY_ROOT}/latent"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(("wplus", "SGIM_WPLUS", "The saved W+ code(s)."))
    FUNCTION = "load"

    INPUT = "w_plus_file"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {cls.INPUT: (wplus_file_list(), {
            "tooltip": f"A .safetensors written by Save W+ Code, in input/{W_PLUS_FOLDER}/."})}}

    @classmethod
    def path(cls, name: str) -> str:
        return os.path.join(input_directory(), W_PLUS_FOLDER, os.path.basename(name))

    @classmethod
    def IS_CHANGED(cls, **inputs):
        path = cls.path(inputs[cls.INPUT])
        return "{}:{}".format(*file_signature(path)) if os.path.isfile(path) else float("nan")

    @classmethod
    def VALIDATE_INPUTS(cls, **inputs):  # named here, so ComfyUI leaves the check of the value to us
        if not os.path.isfile(cls.path(inputs[cls.INPUT])):
            return f"{inputs[cls.INPUT]!r} is not in input/{W_PLUS_FOLDER}/"
        return True

    def load(self, w_plus_file):
        from ..sgim_nodes.latents import load_wplus

        with library_errors(self):
            ws, generator_name, _ = load_wplus(self.path(w_plus_file))
        return (wplus_value(ws, generator_name),)


# Old node ids, so that saved workflows keep loading and running; hidden from search (DEPRECATED).

class SGIMDecode(SGIMStyleGANDecode):
    DEPRECATED = True
    DESCRIPTION = "Old id of StyleGAN Decode (SGIM); kept so that saved workflows still run."


class SGIMSaveLatent(SGIMSaveWPlus):
    DEPRECATED = True
    DESCRIPTION = "Old id of Save W+ Code (SGIM); kept so that saved workflows still run."


class SGIMLoadLatent(SGIMLoadWPlus):
    DEPRECATED = True
    DESCRIPTION = "Old id of Load W+ Code (SGIM); kept so that saved workflows still run."
    INPUT = "latent_file"  # the old input name, so old workflows' widget values still apply

    @classmethod
    def path(cls, name: str) -> str:  # also the old "name [output]" values, not in today's list
        from ..sgim_nodes.latents import legacy_wplus_path

        return legacy_wplus_path(name, input_directory(), output_directory(), W_PLUS_FOLDER)

    def load(self, latent_file):
        return super().load(latent_file)
