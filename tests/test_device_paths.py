"""The library's device paths on an accelerator: the same tiny networks on ``$SGIM_CHECK_DEVICE``
(default ``cuda``) as on the CPU, and short optimiser / projection runs there in float32 and autocast.

Skipped (with the reason) where that device is absent, which is every CI run: these are for
``benchmarks/gpu_check.sh`` on a GPU machine, which also runs them with ``--device cpu`` as a check
of the check (then the autocast cases skip: autocast is offered on CUDA only).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from sgim_nodes.clip import ClipModel, build_tiny_clip
from sgim_nodes.demo import tiny_generator, tiny_stylegan3
from sgim_nodes.optimize import optimize_latent, sample_source_ws

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def device() -> torch.device:
    name = os.environ.get("SGIM_CHECK_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"SGIM_CHECK_DEVICE={name}: no CUDA device here (benchmarks/gpu_check.sh runs these on a GPU)")
    return torch.device(name)


def allow_tf32(on: bool) -> None:
    """Exact comparisons need full float32 convolutions (cuDNN uses TF32 by default)."""
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


@pytest.mark.parametrize("family", ["stylegan2", "stylegan3"])
def test_generator_renders_the_same_image_on_the_device(device, family):
    cpu = tiny_generator(32, 32, "g") if family == "stylegan2" else tiny_stylegan3("g")
    ws = sample_source_ws(cpu, 2, seed=3)
    with torch.no_grad():
        expected = cpu.synthesis(ws, noise_mode="const")
        allow_tf32(False)
        try:
            moved = (tiny_generator(32, 32, "g") if family == "stylegan2" else tiny_stylegan3("g")).to(device)
            got = moved.synthesis(ws.to(device), noise_mode="const").cpu()
        finally:
            allow_tf32(True)
    assert got.shape == expected.shape and torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize("autocast", [None, "bf16", "fp16"])
def test_optimiser_runs_and_lowers_the_clip_loss_on_the_device(device, autocast):
    if autocast is not None and device.type != "cuda":
        pytest.skip("autocast is offered on CUDA only")
    generator = tiny_generator(32, 32, "g").to(device)
    clip = ClipModel(build_tiny_clip(embed_dim=32, seed=0), "tiny", tokenizer=None)
    clip.model.to(device)
    target = torch.nn.functional.normalize(torch.randn(1, 32, generator=torch.Generator().manual_seed(5)), dim=-1)
    result = optimize_latent(generator, clip, target.to(device), sample_source_ws(generator, 1, seed=1),
                             steps=12, lr=0.1, lambda_sim=0.002, autocast=autocast)
    clip_loss = result.history["clip"][:, 0].tolist()
    assert all(math.isfinite(v) for v in clip_loss)
    assert result.ws.device.type == device.type and torch.isfinite(result.ws).all()
    assert clip_loss[-1] < clip_loss[0]


def test_projection_recovers_a_rendered_picture_on_the_device(device):
    from sgim_nodes.project import project_image

    generator = tiny_generator(32, 32, "g").to(device)
    with torch.no_grad():
        picture = generator.synthesis(sample_source_ws(generator, 1, seed=7).to(device), noise_mode="const")
        picture = ((picture.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    start = project_image(generator, picture, distance="pixel", steps=1, seed=0).psnr[0]
    result = project_image(generator, picture, distance="pixel", steps=60, seed=0)
    assert torch.isfinite(result.ws).all() and result.ws.device.type == device.type
    assert result.psnr[0] > start + 3, (start, result.psnr)
