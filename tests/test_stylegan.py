"""StyleGAN2 generator: reference fixtures, truncation, noise, dtypes, autograd, file round trips."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sgim_nodes.errors import ParameterError
from sgim_nodes.stylegan import Generator, GeneratorConfig, load_generator, rosinality_checkpoint, save_generator

ATOL = RTOL = 1e-4  # fixture README: about 50x the observed float noise, still rejects any missing term
MODES = ["activation", "weight"]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL, rtol: float = RTOL):
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def sg_dir(fixtures_dir):
    return fixtures_dir / "stylegan2"


@pytest.fixture(scope="module")
def rosinality_expected(sg_dir):
    return load_file(str(sg_dir / "rosinality_tiny_expected.safetensors"))


@pytest.fixture(scope="module")
def nvlabs_expected(sg_dir):
    return load_file(str(sg_dir / "nvlabs_tiny_expected.safetensors"))


def small_config(**overrides) -> GeneratorConfig:
    base = dict(resolution=32, z_dim=32, w_dim=32, n_mapping=2, channels={4: 16, 8: 16, 16: 12, 32: 8})
    base.update(overrides)
    return GeneratorConfig(**base)


def perturbed(config: GeneratorConfig, seed: int = 0, **kwargs) -> Generator:
    """A random generator whose constant-initialised parameters are perturbed (as in the fixtures),
    so that a comparison would catch a dropped bias / noise / mean latent."""
    torch.manual_seed(seed)
    gen = Generator(config, **kwargs)
    with torch.no_grad():
        for name, tensor in gen.named_parameters():
            if "bias" in name or "noise_strength" in name:
                tensor.add_(torch.randn_like(tensor) * 0.2)
        gen.w_avg.copy_(torch.randn(config.w_dim) * 0.3)
    return gen


# ------------------------------------------------------------------------------------ reference fixtures

@pytest.mark.parametrize("modulation", MODES)
def test_rosinality_fixture_reproduced(sg_dir, rosinality_expected, modulation):
    e = rosinality_expected
    gen = load_generator(sg_dir / "rosinality_tiny.pt", modulation=modulation)
    assert (gen.resolution, gen.num_ws, gen.w_dim, gen.z_dim) == (32, 8, 64, 64)
    assert gen.config.source_format == "rosinality" and gen.name == "rosinality_tiny"
    with torch.no_grad():
        ws = gen.mapping(e["z"])
        assert_close(ws[:, 0], e["w"])
        assert torch.equal(ws[:, 0:1].expand_as(ws), ws)  # every W+ row is the mapping output
        assert_close(gen.synthesis(e["wplus"], noise_mode="const"), e["img_wplus"])
        assert_close(gen(e["z"], truncation_psi=0.7, noise_mode="const"), e["img_z_trunc"])
    assert_close(gen.w_avg, e["latent_avg"], atol=0, rtol=0)


@pytest.mark.parametrize("modulation", MODES)
def test_nvlabs_fixture_reproduced(sg_dir, nvlabs_expected, modulation):
    e = nvlabs_expected
    gen = load_generator(sg_dir / "nvlabs_tiny.pkl", modulation=modulation)
    assert (gen.resolution, gen.num_ws, gen.w_dim, gen.z_dim) == (32, 8, 64, 64)
    assert gen.config.conv_clamp == 256 and gen.config.source_format == "nvlabs"
    with torch.no_grad():
        assert_close(gen.mapping(e["z"], truncation_psi=1), e["ws"])
        assert_close(gen(e["z"], truncation_psi=1, noise_mode="const"), e["img"])
        assert_close(gen(e["z"], truncation_psi=0.5, noise_mode="const"), e["img_psi05"])
        assert_close(gen.synthesis(e["ws_random"], noise_mode="const"), e["img_ws_random"])
    assert_close(gen.w_avg, e["w_avg"], atol=0, rtol=0)


def test_fixture_images_need_every_term(sg_dir, nvlabs_expected):
    """Sanity of the comparison itself: dropping the noise changes the image far beyond tolerance."""
    gen = load_generator(sg_dir / "nvlabs_tiny.pkl")
    with torch.no_grad():
        no_noise = gen.synthesis(nvlabs_expected["ws_random"], noise_mode="none")
    assert (no_noise - nvlabs_expected["img_ws_random"]).abs().max() > 0.05


@pytest.mark.parametrize("name", ["rosinality_tiny.pt", "nvlabs_tiny.pkl"])
def test_safetensors_round_trip_identical(sg_dir, tmp_path, name):
    gen = load_generator(sg_dir / name)
    out = tmp_path / "gen.safetensors"
    save_generator(gen, out)
    again = load_generator(out)
    assert again.config == gen.config and again.name == "gen"  # named after its file
    for key, value in gen.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(gen(z, truncation_psi=0.6), again(z, truncation_psi=0.6))


def test_rosinality_export_matches_original_file(sg_dir):
    """rosinality_checkpoint() writes exactly the layout and raw scaling of the original file."""
    original = torch.load(sg_dir / "rosinality_tiny.pt", weights_only=True)
    exported = rosinality_checkpoint(load_generator(sg_dir / "rosinality_tiny.pt"))
    assert set(exported["g_ema"]) == set(original["g_ema"])
    for key, value in original["g_ema"].items():
        assert exported["g_ema"][key].shape == value.shape, key
        torch.testing.assert_close(exported["g_ema"][key], value, atol=1e-5, rtol=1e-5)
    assert torch.equal(exported["latent_avg"], original["latent_avg"])


# ------------------------------------------------------------------------------------ behaviour

def test_truncation_lerps_toward_w_avg_with_cutoff():
    gen = perturbed(small_config())
    z = torch.randn(3, gen.z_dim)
    with torch.no_grad():
        ws = gen.mapping(z)
        half = gen.mapping(z, truncation_psi=0.5)
        cut = gen.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    assert_close(half, gen.w_avg + 0.5 * (ws - gen.w_avg))
    assert_close(cut[:, :3], gen.w_avg.expand(3, 3, -1))
    assert torch.equal(cut[:, 3:], ws[:, 3:])
    assert (half - ws).abs().max() > 0.01


def test_noise_modes():
    gen = perturbed(small_config())
    ws = gen.mapping(torch.randn(2, gen.z_dim))
    with torch.no_grad():
        const1, const2 = gen.synthesis(ws), gen.synthesis(ws, noise_mode="const")
        none = gen.synthesis(ws, noise_mode="none")
        rand_a = gen.synthesis(ws, "random", torch.Generator().manual_seed(5))
        rand_b = gen.synthesis(ws, "random", torch.Generator().manual_seed(5))
        rand_c = gen.synthesis(ws, "random", torch.Generator().manual_seed(6))
        zero_noise = perturbed(small_config())
        for conv in zero_noise.synthesis_network.convs:
            conv.noise_const.zero_()
        const_zero = zero_noise.synthesis(ws)
    assert torch.equal(const1, const2)
    assert torch.equal(rand_a, rand_b)
    assert (rand_a - rand_c).abs().max() > 1e-3
    assert (const1 - none).abs().max() > 1e-3 and (rand_a - const1).abs().max() > 1e-3
    assert torch.equal(const_zero, none)  # "const" really reads the stored buffers
    with pytest.raises(ParameterError, match="noise_mode"):
        gen.synthesis(ws, noise_mode="fixed")


def test_modulation_modes_agree_and_batched_equals_per_sample():
    gen = perturbed(small_config(conv_clamp=0.5))  # clamp low enough to be reached
    ws = torch.randn(3, gen.num_ws, gen.w_dim)
    with torch.no_grad():
        act = gen.synthesis(ws)
        gen.modulation = "weight"
        weight = gen.synthesis(ws)
        gen.modulation = "activation"
        single = torch.cat([gen.synthesis(ws[i:i + 1]) for i in range(3)])
        gen.synthesis_network.set_channels_last(True)  # NHWC layout: same function
        nhwc = gen.synthesis(ws)
        gen.synthesis_network.set_channels_last(False)
        unclamped = perturbed(small_config()).synthesis(ws)
    assert_close(act, weight, atol=1e-5, rtol=1e-5)
    assert_close(act, single, atol=1e-5, rtol=1e-5)
    assert_close(act, nhwc, atol=1e-5, rtol=1e-5)
    assert nhwc.is_contiguous()
    assert act.abs().max() <= 0.5 * 4 + 1e-5  # each ToRGB clamped, skip sum of <= 4 upsampled terms
    assert (act - unclamped).abs().max() > 1e-2
    with pytest.raises(ParameterError, match="modulation"):
        gen.modulation = "fused"


def test_shape_errors_are_parameter_errors():
    gen = perturbed(small_config())
    with pytest.raises(ParameterError, match="ws"):
        gen.synthesis(torch.randn(1, gen.num_ws - 1, gen.w_dim))
    with pytest.raises(ParameterError, match="z"):
        gen.mapping(torch.randn(1, gen.z_dim + 1))


def test_frozen_inference_mode_and_gradient_to_ws():
    with torch.inference_mode():  # ComfyUI builds and runs nodes like this
        gen = perturbed(small_config())
        gen = gen.to(torch.float64).to(torch.float32)  # moves inside inference mode must not poison the params
        ws = gen.mapping(torch.randn(2, gen.z_dim))
        img = gen.synthesis(ws)
        assert img.shape == (2, 3, 32, 32)
        assert not any(p.requires_grad for p in gen.parameters())
        # the optimiser leaves inference mode explicitly and differentiates w.r.t. a clone of ws
        with torch.inference_mode(False), torch.enable_grad():
            for mode in MODES:
                gen.modulation = mode
                ws_var = ws.clone().requires_grad_(True)
                loss = gen.synthesis(ws_var).square().mean()
                loss.backward()
                assert ws_var.grad is not None and torch.isfinite(ws_var.grad).all()
                assert ws_var.grad.abs().sum() > 0
                if mode == "activation":
                    grad_act = ws_var.grad.clone()
            assert_close(ws_var.grad, grad_act, atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in gen.parameters())


def test_gradient_matches_finite_difference():
    gen = perturbed(small_config()).double()
    ws = torch.randn(1, gen.num_ws, gen.w_dim, dtype=torch.float64, requires_grad=True)
    target = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    loss_fn = lambda w: (gen.synthesis_network(w, "const") * target).sum()  # noqa: E731 - float64 path
    loss_fn(ws).backward()
    direction = torch.randn_like(ws)
    eps = 1e-5
    with torch.no_grad():
        numeric = (loss_fn(ws + eps * direction) - loss_fn(ws - eps * direction)) / (2 * eps)
    assert abs(numeric.item() - (ws.grad * direction).sum().item()) < 1e-5 * max(1.0, abs(numeric.item()))


@pytest.mark.parametrize("noise_mode", ["const", "random"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_activation_backward_equals_autograd_of_weight_form(noise_mode, layout):
    """The activation form's hand-written backward against plain autograd of the weight form, in float64,
    with a clamp that is reached, a batch of 2 and an image-dependent loss: gradients to ws and to
    an input-independent upstream tensor agree to ~1e-12, i.e. the backward is exact, not approximate."""
    gen = perturbed(small_config(conv_clamp=0.6)).double()
    gen.synthesis_network.set_channels_last(layout == "nhwc")
    ws = torch.randn(2, gen.num_ws, gen.w_dim, dtype=torch.float64)
    target = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads, images, clipped = {}, {}, []
    for conv in gen.synthesis_network.convs:
        conv.register_forward_hook(lambda m, i, out: clipped.append((out.abs() >= 0.6).double().mean().item()))
    for mode in MODES:
        gen.modulation = mode
        ws_var = ws.clone().requires_grad_(True)
        noise = torch.Generator().manual_seed(5)
        images[mode] = gen.synthesis_network(ws_var, noise_mode, noise)
        (images[mode] * target).sum().backward()
        grads[mode] = ws_var.grad
    assert 0 < max(clipped) < 0.9  # the clamp is reached, but not everywhere (both gradient paths are tested)
    assert_close(images["activation"], images["weight"], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(grads["activation"], grads["weight"], atol=1e-11, rtol=1e-9)
    assert grads["activation"].abs().max() > 1e-3


def test_activation_backward_leaves_a_shared_output_gradient_alone():
    """Used on its own, a conv layer must not overwrite the gradient it receives: here ``y + other``
    hands the very same gradient tensor to ``y`` and to ``other``. (Inside SynthesisNetwork each
    conv owns its output gradient and may overwrite it; the float64 test above covers that path.)"""
    gen = perturbed(small_config())
    conv = gen.synthesis_network.convs[4]  # 12 -> 12 channels at 16 px
    x = torch.randn(2, 12, 16, 16)
    w = torch.randn(2, gen.w_dim, requires_grad=True)
    weight_grad = torch.randn(2, 12, 16, 16)
    for owns in (False, True):
        leaf = torch.zeros(2, 12, 16, 16, requires_grad=True)
        other = leaf * 2.0  # made first, so autograd runs its backward after the conv's
        y = conv(x, w, conv.noise_const, owns_output_grad=owns)
        ((y + other) * weight_grad).sum().backward()
        if not owns:
            assert torch.equal(leaf.grad, 2 * weight_grad)
    assert not torch.equal(leaf.grad, 2 * weight_grad)  # the flag really licenses the overwrite


@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_stripwise_last_block_is_the_same_function_and_gradient(noise_mode, layout):
    """The last block computed (and recomputed in backward) in horizontal strips, halos included,
    against the whole-image path: float64, batch 2, a clamp that is reached, 4 and 7 strips."""
    config = small_config(resolution=64, channels={4: 16, 8: 16, 16: 12, 32: 8, 64: 8}, conv_clamp=0.6)
    gen = perturbed(config).double()
    gen.synthesis_network.set_channels_last(layout == "nhwc")
    ws = torch.randn(2, gen.num_ws, gen.w_dim, dtype=torch.float64)
    target = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    results = {}
    for strips in (1, 4, 7):
        gen.synthesis_network.last_block_strips = strips
        ws_var = ws.clone().requires_grad_(True)
        img = gen.synthesis_network(ws_var, noise_mode, torch.Generator().manual_seed(3))
        (img * target).sum().backward()
        results[strips] = img.detach(), ws_var.grad
    for strips in (4, 7):
        assert_close(results[strips][0], results[1][0], atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(results[strips][1], results[1][1], atol=1e-11, rtol=1e-9)
    assert results[1][1][:, -3:].abs().max() > 1e-3  # the last block's own W+ rows get gradient


def test_stripwise_last_block_under_autocast_recomputes_in_the_same_precision():
    """Backward recomputes each strip under the forward's autocast state, and the activation form's
    backward copes with a float32 input feeding a bfloat16 layer."""
    config = small_config(resolution=64, channels={4: 16, 8: 16, 16: 12, 32: 8, 64: 8})
    gen = perturbed(config)
    ws = torch.randn(1, gen.num_ws, gen.w_dim)
    dtypes, grads = [], {}
    gen.synthesis_network.convs[-1].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    for strips in (1, 4):
        gen.synthesis_network.last_block_strips = strips
        ws_var = ws.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            img = gen.synthesis(ws_var)
        img.square().mean().backward()
        grads[strips] = ws_var.grad
    assert dtypes == [torch.bfloat16] * (1 + 4 + 4)  # whole image; 4 strips forward; 4 recomputed in backward
    scale = grads[1].abs().max()
    assert (grads[4] - grads[1]).abs().max() < 0.01 * scale  # bfloat16 rounding apart, the same gradient


def test_stripwise_last_block_steps_aside_for_parameter_gradients():
    gen = perturbed(small_config(resolution=64, channels={4: 16, 8: 16, 16: 12, 32: 8, 64: 8}))
    assert gen.synthesis_network.last_block_strips == 1  # below 512 px the whole image is cheap
    gen.synthesis_network.last_block_strips = 4
    gen.modulation = "weight"
    gen.requires_grad_(True)  # e.g. the benchmark's re-implementation of the original loop
    gen.synthesis(torch.randn(1, gen.num_ws, gen.w_dim)).square().sum().backward()
    assert gen.synthesis_network.convs[-1].weight.grad.abs().sum() > 0
    assert Generator(GeneratorConfig.stylegan2(512, n_mapping=1)).synthesis_network.last_block_strips == 8


def test_activation_form_refuses_weight_gradients():
    gen = perturbed(small_config())
    gen.synthesis_network.convs[1].weight.requires_grad_(True)
    with pytest.raises(ParameterError, match="modulation='weight'"):
        gen.synthesis(torch.randn(1, gen.num_ws, gen.w_dim))
    gen.modulation = "weight"
    gen.synthesis(torch.randn(1, gen.num_ws, gen.w_dim)).sum().backward()
    assert gen.synthesis_network.convs[1].weight.grad.abs().sum() > 0
    with torch.no_grad():  # no gradient wanted: the activation form runs
        gen.modulation = "activation"
        assert torch.isfinite(gen.synthesis(torch.randn(1, gen.num_ws, gen.w_dim))).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs_close_to_float32(sg_dir, nvlabs_expected, dtype):
    gen = load_generator(sg_dir / "nvlabs_tiny.pkl", dtype=dtype)
    assert gen.dtype == dtype and gen.w_avg.dtype == dtype
    with torch.no_grad():
        img = gen.synthesis(nvlabs_expected["ws_random"])
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    err = (img - nvlabs_expected["img_ws_random"]).abs().max().item()
    assert err < (0.05 if dtype == torch.float16 else 0.2), err
    assert err > 0  # it really ran in low precision


def test_config_json_round_trip():
    cfg = GeneratorConfig.stylegan2(resolution=256, conv_clamp=256.0, source_format="test")
    import json

    again = GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.num_ws == 14
    assert GeneratorConfig.stylegan2(resolution=1024).num_ws == 18
    assert cfg.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    with pytest.raises(ParameterError, match="resolution"):
        GeneratorConfig(resolution=48)
    with pytest.raises(ParameterError, match="unknown"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_loaded_inside_inference_mode_is_differentiable(sg_dir):
    with torch.inference_mode():
        gen = load_generator(sg_dir / "rosinality_tiny.pt", dtype="float32")
        ws = gen.mapping(torch.randn(1, gen.z_dim))
    with torch.enable_grad():
        ws_var = ws.clone().requires_grad_(True)
        gen.synthesis(ws_var).mean().backward()
    assert ws_var.grad.abs().sum() > 0


def test_load_parameter_errors(sg_dir):
    with pytest.raises(ParameterError, match="dtype"):
        load_generator(sg_dir / "rosinality_tiny.pt", dtype="int8")
    with pytest.raises(ParameterError, match="modulation"):
        load_generator(sg_dir / "rosinality_tiny.pt", modulation="grouped")


def test_float16_large_styles_do_not_overflow():
    """Squared styles above 65504 overflow float16; the demodulation is computed in float32."""
    gen = perturbed(small_config())
    with torch.no_grad():
        for conv in gen.synthesis_network.convs:
            conv.affine_bias.fill_(300.0)  # |style| ~ 300 -> style^2 ~ 9e4 > float16 max
    ws = torch.randn(1, gen.num_ws, gen.w_dim)
    for mode in MODES:
        gen.modulation = mode
        with torch.no_grad():
            reference = gen.synthesis(ws)
            half = gen.half().synthesis(ws)
            gen.float()
        assert torch.isfinite(half).all()
        assert (half - reference).abs().max() < 0.05 * reference.abs().max()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):  # what the optimiser's amp does
            mixed = gen.synthesis(ws)
        assert (mixed - reference).abs().max() < 0.05 * reference.abs().max()
