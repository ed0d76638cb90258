"""Fixtures of the real-ComfyUI tests: one server per session, with tiny models and sample sounds.

Skipped (with the reason) unless ``COMFYUI_DIR`` points to a ComfyUI checkout. ``COMFYUI_PYTHON``
selects the interpreter that runs the server (default: the one running pytest).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from comfy_client import ComfyServer, copy_inputs  # noqa: E402
from tiny_models import write_tiny_models  # noqa: E402

SOUNDS = ["fire.wav", "thunderstorm.wav", "raining.wav", "giggling.wav"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def write_painting(path: Path) -> None:
    """A 140 x 90 RGBA picture (gradients and a disc, half-transparent): a user's picture of an odd size."""
    import numpy as np
    from PIL import Image

    rows, cols = np.mgrid[0:90, 0:140]
    disc = (rows - 45) ** 2 + (cols - 70) ** 2 < 30 ** 2
    pixels = np.stack([cols * 255 // 139, rows * 255 // 89, disc * 200, np.full_like(rows, 128)], axis=2)
    Image.fromarray(pixels.astype(np.uint8), mode="RGBA").save(path)


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    value = os.environ.get("COMFYUI_DIR")
    if not value:
        pytest.skip("integration tests need a ComfyUI checkout: set COMFYUI_DIR=/path/to/ComfyUI "
                    "(and COMFYUI_PYTHON to its interpreter)")
    path = Path(value)
    if not (path / "main.py").is_file():
        pytest.skip(f"COMFYUI_DIR={value} has no main.py: not a ComfyUI checkout")
    return path


@pytest.fixture(scope="session")
def server(comfyui_dir, tmp_path_factory, shared, audio_dir):
    base = tmp_path_factory.mktemp("comfyui_base")
    names = write_tiny_models(base / "models", shared)
    copy_inputs(base, audio_dir, SOUNDS)
    shutil.copyfile(audio_dir / "wind.wav", base / "input" / "music.wav")  # music_to_painting's input
    write_painting(base / "input" / "my_painting.png")  # edit_my_painting's Load Image
    instance = ComfyServer(comfyui_dir, base, python=os.environ.get("COMFYUI_PYTHON", sys.executable))
    instance.start()
    instance.names = names
    yield instance
    instance.stop()
