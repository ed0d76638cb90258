"""Rebuild ``example_workflows/`` (JSON and thumbnails) in a real ComfyUI with headless Chromium.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy-venv/bin/python \\
        python tests/integration/refresh_examples.py [OUT_DIR]

A server starts with tiny random-weight models copied under the file names the examples expect
(landscape.pt, ffhq.pkl, ...), so that the Layer Mask editors in the thumbnails draw real layer bars
instead of "file not found"; the drafts come from ``build_example_workflows.py`` and are then re-saved
by the editor itself (``browser.py canonicalize``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build_example_workflows as examples  # noqa: E402
from browser import canonicalize  # noqa: E402
from comfy_client import REPO, ComfyServer, copy_inputs  # noqa: E402
from conftest import write_painting  # noqa: E402
from tiny_models import write_tiny_models  # noqa: E402


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else REPO / "example_workflows"
    shared = Path(os.environ.get("SGIM_SHARED_DIR", REPO.parent / "shared"))
    with tempfile.TemporaryDirectory(prefix="sgim_examples_") as tmp:
        base = Path(tmp)
        models = base / "models"
        names = write_tiny_models(models, shared)
        stand_ins = {  # the examples' file names, played by tiny models of the same kind
            ("stylegan", examples.LANDSCAPE): names["generator"], ("stylegan", examples.FFHQ): "nvlabs_tiny.pkl",
            ("stylegan", examples.WIKIART): names["generator_sg3"], ("sgim_clip", examples.CLIP): names["clip"],
            ("sgim_audio_encoders", examples.ENCODER): names["encoder"],
            ("sgim_identity", examples.IDENTITY): names["identity"], ("sgim_vgg", examples.VGG): names["vgg"],
        }
        for (folder, name), source in stand_ins.items():
            if (models / folder / source).is_file():
                shutil.copyfile(models / folder / source, models / folder / name)
        audio = shared / "audio"
        copy_inputs(base, audio, ["fire.wav", "thunderstorm.wav", "raining.wav", "giggling.wav"])
        shutil.copyfile(audio / "wind.wav", base / "input" / "music.wav")
        write_painting(base / "input" / examples.PAINTING)
        server = ComfyServer(Path(os.environ["COMFYUI_DIR"]), base,
                             python=os.environ.get("COMFYUI_PYTHON", sys.executable))
        server.start()
        try:
            examples.main([server.url, str(out_dir)])
            canonicalize(server.url, out_dir)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
