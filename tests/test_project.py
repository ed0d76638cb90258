"""Projection of pictures into W+ and pivotal tuning (sgim_nodes.project), on tiny random-weight generators."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sgim_nodes.__main__ import main as cli
from sgim_nodes.errors import ModelFileError, ParameterError
from sgim_nodes.latents import load_wplus
from sgim_nodes.project import (LPIPSVGG, has_noise_inputs, load_lpips, load_vgg16_features, prepare_target,
                                project_image, psnr)
from sgim_nodes.project.distance import lpips_linear_weights
from sgim_nodes.project.projector import noise_regularization, w_statistics
from sgim_nodes.stylegan import Generator, GeneratorConfig, load_generator, save_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

W_DIM = 32


def tiny_generator(resolution: int = 32, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    channels = {2 ** i: 16 for i in range(2, resolution.bit_length())}
    gen = Generator(GeneratorConfig(resolution=resolution, z_dim=W_DIM, w_dim=W_DIM, n_mapping=2, channels=channels))
    with torch.no_grad():
        gen.w_avg.copy_(gen.estimate_w_avg(256))
        for conv in gen.synthesis_network.convs:  # random init leaves noise switched off (strength 0)
            conv.noise_strength.fill_(0.1)
    return gen


@pytest.fixture(scope="module")
def generator() -> Generator:
    return tiny_generator()


def known_wplus(gen: Generator, offset: float = 0.3, seed: int = 5) -> torch.Tensor:
    """A W+ code that W cannot reach: a mapped w (psi 0.7) plus per-layer offsets of ``offset`` x w's spread."""
    gen_rng = torch.Generator().manual_seed(seed)
    z = torch.randn(1, gen.z_dim, generator=gen_rng)
    spread = w_statistics(gen)
    offsets = torch.randn(1, gen.num_ws, gen.w_dim, generator=gen_rng) * spread / gen.w_dim ** 0.5 * offset
    return gen.mapping(z, truncation_psi=0.7) + offsets


def as_comfy_image(images_m11: torch.Tensor) -> torch.Tensor:
    return ((images_m11.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


def block_means(values: list[float], blocks: int = 5) -> list[float]:
    chunks = np.array_split(np.asarray(values), blocks)
    return [float(c.mean()) for c in chunks]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) provides the sample photographs")
    return data.astronaut()  # 512 x 512 RGB photograph


# --- recovering a known code ------------------------------------------------------------------

def test_projection_recovers_a_known_wplus_code_and_wplus_beats_w(generator, capsys):
    ws = known_wplus(generator)
    with torch.no_grad():
        target = generator.synthesis(ws)
    picture = as_comfy_image(target)
    w_plus = project_image(generator, picture, distance="pixel", steps=400)
    w_only = project_image(generator, picture, distance="pixel", steps=400, space="w")
    with capsys.disabled():
        print(f"\n  known W+ code at 32 px: PSNR {w_plus.psnr[0]:.2f} dB in W+ mode, {w_only.psnr[0]:.2f} dB in W only")
    assert w_plus.psnr[0] >= 30.0
    assert w_plus.psnr[0] > w_only.psnr[0] + 3  # the code is not in W: W+ is what reaches it
    assert w_plus.ws.shape == (1, generator.num_ws, W_DIM)
    assert w_plus.generator is None  # nothing to carry: the code alone renders the fit with the original
    with torch.no_grad():
        assert psnr(generator.synthesis(w_plus.ws), target.clamp(-1, 1))[0] == pytest.approx(w_plus.psnr[0], abs=1e-4)
    # the loss falls on average in each phase: every fifth of the steps lower than the one before
    for phase in ("w", "wplus"):
        means = block_means(w_plus.history[phase])
        assert all(b < a for a, b in zip(means, means[1:])), (phase, means)
    assert w_plus.history["wplus"][-1] < w_plus.history["w"][-1]


def test_projection_is_deterministic_for_a_seed(generator):
    picture = torch.rand(1, 20, 24, 3)
    a = project_image(generator, picture, distance="multiscale", steps=12, seed=3)
    b = project_image(generator, picture, distance="multiscale", steps=12, seed=3)
    assert torch.equal(a.ws, b.ws)


# --- pivotal tuning ----------------------------------------------------------------------------

def test_pivotal_tuning_raises_psnr_and_leaves_the_original_untouched(generator, photo, tmp_path, capsys):
    before = copy.deepcopy(generator.state_dict())
    result = project_image(generator, photo, distance="multiscale", steps=150, tune_steps=150, tune_lr=1e-3)
    with capsys.disabled():
        print(f"\n  astronaut photograph at 32 px: PSNR {result.psnr_before_tuning[0]:.2f} dB after projection, "
              f"{result.psnr[0]:.2f} dB after pivotal tuning")
    assert result.psnr[0] > result.psnr_before_tuning[0] + 2.0, (result.psnr_before_tuning, result.psnr)
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert generator.modulation == "activation" and not any(p.requires_grad for p in generator.parameters())
    tuned = result.generator
    assert tuned is not generator and tuned.name == f"{generator.name}-tuned"
    assert tuned.modulation == "activation" and not any(p.requires_grad for p in tuned.parameters())
    # auto noise: fitted during projection (tuning on), stored in the tuned copy, zero mean, unit variance
    assert result.noise_maps is not None
    for stored, fitted in zip(tuned.noise_buffers(), result.noise_maps):
        assert torch.equal(stored, fitted)
        assert abs(float(fitted.mean())) < 1e-4 and float(fitted.square().mean()) == pytest.approx(1, abs=1e-3)
    # the mapping is untouched (w_avg and random codes keep their meaning); synthesis weights moved
    assert torch.equal(tuned.mapping_network.weights[0], generator.mapping_network.weights[0])
    assert not torch.equal(tuned.synthesis_network.convs[0].weight, generator.synthesis_network.convs[0].weight)
    # savable as our .safetensors, and the file renders the fit
    save_generator(tuned, tmp_path / "tuned.safetensors")
    reloaded = load_generator(tmp_path / "tuned.safetensors")
    with torch.no_grad():
        assert torch.allclose(reloaded.synthesis(result.ws), result.images, atol=1e-5)


def test_noise_maps_without_tuning_come_back_in_a_generator_copy(generator):
    picture = torch.rand(1, 32, 32, 3)
    result = project_image(generator, picture, distance="pixel", steps=40, optimize_noise=True)
    assert result.generator is not None and result.generator is not generator
    with torch.no_grad():
        assert torch.allclose(result.generator.synthesis(result.ws), result.images, atol=1e-6)
    assert not torch.equal(generator.noise_buffers()[3], result.generator.noise_buffers()[3])
    # regularisation: independent noise scores far lower than noise correlated with its neighbours
    gen_rng = torch.Generator().manual_seed(0)
    white = [torch.randn(64, 64, generator=gen_rng)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 32, 32, generator=gen_rng), scale_factor=2)[0, 0]]
    assert float(noise_regularization(white)) < 0.1 * float(noise_regularization(smooth))


class _NoNoiseGenerator(Generator):
    """Stands in for StyleGAN3: no noise inputs (``synthesis`` takes no noise maps)."""

    family = "stylegan3"

    def synthesis(self, ws, noise_mode="const", noise_generator=None):
        return super().synthesis(ws, noise_mode="none")


def test_generators_without_noise_inputs_project_and_tune_without_noise_maps():
    gen = tiny_generator(16)
    sg3 = _NoNoiseGenerator(gen.config)
    sg3.load_state_dict(gen.state_dict())
    assert not has_noise_inputs(sg3) and has_noise_inputs(gen)
    result = project_image(sg3, torch.rand(1, 16, 16, 3), distance="pixel", steps=10, tune_steps=5,
                           optimize_noise=True)
    assert result.noise_maps is None and isinstance(result.generator, _NoNoiseGenerator)


def test_a_stylegan3_generator_projects_and_tunes():
    """The real StyleGAN3 network (no noise inputs, its own filtered activations): a code rendered by it is
    recovered, tuning a copy raises the PSNR further, and the loaded generator is not touched."""
    from sgim_nodes.stylegan import StyleGAN3Config, StyleGAN3Generator

    torch.manual_seed(0)
    sg3 = StyleGAN3Generator(StyleGAN3Config(resolution=32, z_dim=32, w_dim=32, channel_base=512, channel_max=32,
                                             num_layers=6))
    sg3.w_avg.copy_(sg3.estimate_w_avg(256))
    ws = sg3.mapping(torch.randn(1, 32), truncation_psi=0.7)
    image = sg3.synthesis(ws)
    before = copy.deepcopy(sg3.state_dict())
    result = project_image(sg3, ((image[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1)[None], distance="pixel",
                           steps=60, tune_steps=10)
    assert not has_noise_inputs(sg3) and result.noise_maps is None
    assert result.psnr_before_tuning[0] >= 30 and result.psnr[0] > result.psnr_before_tuning[0]
    assert isinstance(result.generator, StyleGAN3Generator) and result.generator is not sg3
    assert all(torch.equal(before[k], v) for k, v in sg3.state_dict().items())


def test_a_conditional_generator_projects_without_a_class(shared):
    """A conditional generator (the ADA fixture, 5 classes): projection optimises w directly, so a code
    rendered with one class is recovered without being told the class."""
    gen = load_generator(shared / "fixtures" / "stylegan_more" / "ada_cond_tiny.pkl")
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ws = gen.mapping(z, truncation_psi=0.7, c=torch.eye(gen.c_dim)[[2]])
        image = gen.synthesis(ws)
    result = project_image(gen, ((image[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1)[None], distance="pixel",
                           steps=80)
    assert gen.c_dim == 5 and result.ws.shape == ws.shape and result.psnr[0] >= 30


def test_noise_map_gradient_of_the_activation_form_matches_autograd():
    gen = tiny_generator(16).double()
    ws = gen.mapping(torch.randn(2, W_DIM, dtype=torch.float64)).detach()
    grads = {}
    for mode in ("activation", "weight"):
        gen.modulation = mode
        maps = [b.clone().requires_grad_(True) for b in gen.noise_buffers()]
        out = gen.synthesis(ws, noise_maps=maps)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        grads[mode] = [m.grad for m in maps]
    gen.modulation = "activation"
    for a, w in zip(grads["activation"], grads["weight"]):
        assert torch.allclose(a, w, atol=1e-10, rtol=1e-8)
    assert any(float(g.abs().max()) > 0 for g in grads["activation"])
    with torch.no_grad():  # explicit maps equal to the stored ones render the stored-noise image
        assert torch.equal(gen.synthesis(ws, noise_maps=gen.noise_buffers()), gen.synthesis(ws))
    with pytest.raises(ParameterError, match="noise_maps"):
        gen.synthesis(ws, noise_maps=gen.noise_buffers()[:-1])


# --- pictures of any size and mode -------------------------------------------------------------

def test_odd_pictures_give_defined_targets():
    rng = np.random.default_rng(0)
    rgb = rng.random((40, 60, 3), dtype=np.float32)
    base = prepare_target(rgb, 32)
    assert base.shape == (1, 3, 32, 32) and base.min() >= -1 and base.max() <= 1
    # alpha is ignored, whatever its value
    rgba = np.concatenate([rgb, np.zeros((40, 60, 1), np.float32)], axis=2)
    assert torch.equal(prepare_target(rgba, 32), base)
    # grey: the same value in the three channels (2-D array, 1-channel, grey+alpha, PIL "L" and "I;16")
    grey = rng.random((40, 60), dtype=np.float32)
    target = prepare_target(grey, 32)
    assert torch.equal(target[:, 0], target[:, 1]) and torch.equal(target[:, 0], target[:, 2])
    assert torch.equal(prepare_target(grey[:, :, None], 32), target)
    assert torch.equal(prepare_target(np.stack([grey, grey], axis=2), 32), target)
    pil_grey = Image.fromarray((grey * 255).astype(np.uint8), mode="L")
    assert prepare_target(pil_grey, 32).shape == (1, 3, 32, 32)
    assert prepare_target(Image.fromarray((grey * 65535).astype(np.uint16)), 32).shape == (1, 3, 32, 32)
    assert prepare_target(Image.new("P", (9, 5)), 32).shape == (1, 3, 32, 32)
    # centre crop: a 17 x 3000 strip becomes its middle 17 x 17 square
    strip = np.zeros((17, 3000, 3), np.float32)
    strip[:, 1491:1508] = 1.0  # the centred 17 columns are white, everything else black
    assert float(prepare_target(strip, 32).min()) == pytest.approx(1.0)
    # pad: the whole strip, centred, the border repeating its edge rows
    padded = prepare_target(strip, 32, fit="pad")
    assert padded.shape == (1, 3, 32, 32) and torch.isfinite(padded).all()
    assert torch.equal(padded[:, :, 0], padded[:, :, 31])  # a 1-row-high picture: every row alike
    # 1 x 1: a flat picture of that colour
    one = prepare_target(np.array([[[0.25, 0.5, 1.0]]], np.float32), 32)
    assert torch.allclose(one[0, :, 5, 7], torch.tensor([-0.5, 0.0, 1.0]))
    assert float(one.std(dim=(2, 3)).max()) == 0.0
    # a batch (ComfyUI IMAGE) gives one target per picture; a list of different sizes too
    assert prepare_target(torch.rand(3, 10, 20, 3), 32).shape == (3, 3, 32, 32)
    assert prepare_target([rgb, grey, rgba[:5, :7]], 32).shape == (3, 3, 32, 32)


@pytest.mark.parametrize("picture, message", [
    (np.zeros((0, 5, 3), np.float32), "empty"),
    (np.zeros((4, 4, 5), np.float32), "1 to 4 channels"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    (np.zeros((2, 2, 2, 2, 3), np.float32), "expected"),
    (np.zeros((4, 4), np.int64), "pixel type"),
    ("a.png", "expected a picture"),
    ([], "empty list"),
])
def test_unusable_pictures_are_clear_errors(picture, message):
    with pytest.raises(ParameterError, match=message) as info:
        prepare_target(picture, 32)
    assert info.value.parameter == "image"


def test_a_batch_projects_to_one_code_per_picture(generator):
    pictures = torch.rand(3, 24, 40, 3)
    result = project_image(generator, pictures, distance="pixel", steps=8)
    assert result.ws.shape == (3, generator.num_ws, W_DIM) and len(result.psnr) == 3
    # a batch is independent fits (without the random W jitter, whose draws depend on the batch size)
    batch = project_image(generator, pictures, distance="pixel", steps=8, w_fraction=0.0)
    single = project_image(generator, pictures[1:2], distance="pixel", steps=8, w_fraction=0.0)
    assert torch.allclose(batch.ws[1], single.ws[0], atol=1e-5)


def test_bad_settings_are_clear_errors(generator):
    picture = torch.rand(1, 8, 8, 3)
    for kwargs, parameter in [({"steps": 0}, "steps"), ({"space": "z"}, "space"), ({"fit": "stretch"}, "fit"),
                              ({"distance": "ssim"}, "distance"), ({"distance": "clip"}, "clip"),
                              ({"lr": float("nan")}, "lr"), ({"w_fraction": 2.0}, "w_fraction")]:
        with pytest.raises(ParameterError) as info:
            project_image(generator, picture, **kwargs)
        assert parameter in str(info.value)
    with pytest.raises(ModelFileError, match="vgg16-397923af.pth"):
        project_image(generator, picture, distance="lpips")  # no LPIPS model given


# --- distances ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg_reference(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A random VGG16 in torchvision's layout (features.N.*), written by the lpips package's own VGG."""
    lpips_pkg = pytest.importorskip("lpips")
    torch.manual_seed(0)
    reference = lpips_pkg.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    state = {}
    for name, module in reference.net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            index = name.split(".")[-1]
            state[f"features.{index}.weight"] = module.weight.detach().clone()
            state[f"features.{index}.bias"] = module.bias.detach().clone()
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, reference


@pytest.fixture(scope="module")
def vgg_file(vgg_reference) -> Path:
    return vgg_reference[0]


def test_lpips_matches_the_lpips_package(vgg_reference):
    path, reference = vgg_reference
    ours = load_lpips(path)
    a, b = torch.rand(2, 3, 48, 48) * 2 - 1, torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        expected = reference(a, b).flatten()
    assert torch.allclose(ours(a, b), expected, rtol=1e-5, atol=1e-7)
    assert float(ours(a, a).abs().max()) == 0.0


def test_lpips_projection_runs_and_lowers_the_distance(generator, vgg_file):
    result = project_image(generator, torch.rand(1, 32, 32, 3), distance="lpips", lpips=load_lpips(vgg_file),
                           steps=20, w_fraction=0.0)
    assert result.history["wplus"][-1] < result.history["wplus"][0]


def test_vgg_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "sgim_vgg" / "vgg16-397923af.pth"
    with pytest.raises(ModelFileError, match=r"vgg16-397923af\.pth.*sgim_vgg"):
        load_vgg16_features(missing)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, wrong)
    with pytest.raises(ModelFileError, match=r"features\.0\.weight should have shape \[64, 3, 3, 3\]"):
        load_vgg16_features(wrong)
    hostile = tmp_path / "hostile.pth"
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    hostile.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError, match=r"hostile\.pth.*nothing from it was executed") as refused:
        load_vgg16_features(hostile)
    assert "weights_only" not in str(refused.value)  # torch's advice to run code from the file never reaches the user
    assert len(lpips_linear_weights()) == 5


def test_clip_distance_projection_runs(generator):
    from sgim_nodes.clip import ClipModel, build_tiny_clip, _tokenizer_for

    model = build_tiny_clip(embed_dim=32, seed=0)
    clip = ClipModel(model, "sgim-tiny-clip", _tokenizer_for("sgim-tiny-clip", model))
    result = project_image(generator, torch.rand(1, 32, 32, 3), distance="clip", clip=clip, steps=16,
                           w_fraction=0.0)
    assert result.history["wplus"][-1] < result.history["wplus"][0]


# --- the command line --------------------------------------------------------------------------

def test_project_command_on_a_photograph_writes_a_code_the_editor_accepts(photo, tmp_path, capsys):
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config

    gen = tiny_generator()
    save_generator(gen, tmp_path / "tiny.safetensors")
    picture = tmp_path / "astronaut.jpg"
    Image.fromarray(photo).save(picture)
    code = tmp_path / "astronaut.safetensors"
    assert cli(["project", str(picture), "--generator", str(tmp_path / "tiny.safetensors"), "--out", str(code),
                "--distance", "multiscale", "--steps", "30", "--tune", "--tune-steps", "10", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR to the picture at 32 px" in printed and "(tuned)" in printed
    tuned_path = tmp_path / "astronaut_generator.safetensors"
    ws, name, _ = load_wplus(code)
    assert ws.shape == (1, gen.num_ws, W_DIM) and name == load_generator(tuned_path).name
    assert np.asarray(Image.open(tmp_path / "astronaut_projection.png")).shape == (32, 32, 3)
    save_open_clip_state_dict(build_tiny_clip(embed_dim=32, seed=0), tmp_path / "clip.safetensors",
                              config=tiny_clip_config(32))
    edited = tmp_path / "edited.png"
    assert cli(["edit", "--text", "a rainy night", "--generator", str(tuned_path), "--source-latent", str(code),
                "--clip", str(tmp_path / "clip.safetensors"),
                "--out", str(edited), "--steps", "3", "--device", "cpu"]) == 0
    source_ws = load_wplus(tmp_path / "edited_wplus.safetensors")[2]
    assert torch.equal(source_ws, ws)  # the edit started from the projected code


def test_project_command_errors(tmp_path, capsys):
    gen = tiny_generator(16)
    save_generator(gen, tmp_path / "g.safetensors")
    Image.new("RGB", (4, 4)).save(tmp_path / "p.png")
    (tmp_path / "not_a_picture.png").write_text("hello")
    base = ["project", "--generator", str(tmp_path / "g.safetensors"), "--out", str(tmp_path / "c.safetensors")]
    assert cli(base + [str(tmp_path / "not_a_picture.png"), "--distance", "pixel"]) == 1
    assert "not a picture" in capsys.readouterr().err
    # a picture whose header claims 20000 x 20000 pixels is refused from its header, before decoding
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png", optimize=True)
    assert cli(base + [str(tmp_path / "huge.png"), "--distance", "pixel"]) == 1
    assert "huge.png" in capsys.readouterr().err
    assert cli(base + [str(tmp_path / "p.png"), "--vgg", str(tmp_path / "none.pth")]) == 1
    assert "--vgg: file not found" in capsys.readouterr().err
    assert cli(["project", str(tmp_path / "p.png"), "--generator", str(tmp_path / "g.safetensors"),
                "--out", str(tmp_path / "c.png"), "--distance", "pixel"]) == 1
    assert ".safetensors" in capsys.readouterr().err
