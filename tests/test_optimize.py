"""The W+ optimiser on a tiny random StyleGAN2 and a tiny random open_clip ViT (fast, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sgim_nodes import memory
from sgim_nodes.clip import ClipModel, build_tiny_clip
from sgim_nodes.errors import Cancelled, ParameterError
from sgim_nodes.optimize import (LOSS_TERMS, PRESETS, TINY_IRSE, IRSEBackbone, LayerMask, lr_schedule,
                                 optimize_latent, sample_source_ws)
from sgim_nodes.stylegan import Generator, GeneratorConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")

W_DIM = 32


def make_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(resolution=32, z_dim=W_DIM, w_dim=W_DIM, n_mapping=2,
                                    channels={4: 16, 8: 16, 16: 16, 32: 16}))
    with torch.no_grad():
        gen.w_avg.copy_(gen.estimate_w_avg(256))
    return gen


def make_clip(seed: int = 0) -> ClipModel:
    """Engineer B's tiny random open_clip ViT (32 px, one block), 24-d embeddings."""
    return ClipModel(build_tiny_clip(embed_dim=24, seed=seed), "sgim-tiny-clip-24", tokenizer=None)


@pytest.fixture(scope="module")
def gen():
    return make_generator()


@pytest.fixture(scope="module")
def clip():
    return make_clip()


def unit(x):
    return F.normalize(x, dim=-1)


def cos_to(clip, gen, ws, targets):
    with torch.no_grad():
        return (clip.image_features(gen.synthesis(ws)) * unit(targets)).sum(-1)


def test_lr_schedule_matches_the_original_shape():
    assert lr_schedule(0.0, 0.1) == 0.0
    assert lr_schedule(0.025, 0.1) == pytest.approx(0.05)
    assert lr_schedule(0.5, 0.1) == pytest.approx(0.1)
    assert lr_schedule(0.875, 0.1) == pytest.approx(0.05)
    assert PRESETS["landscape"] == dict(steps=300, lr=0.1, lambda_sim=0.002, lambda_id=0.0, truncation=0.7)


def test_cosine_distance_falls_and_history_is_consistent(gen, clip):
    source = sample_source_ws(gen, 2, seed=3)
    targets = torch.randn(2, clip.embed_dim, generator=torch.Generator().manual_seed(5))
    before = cos_to(clip, gen, source, targets)
    result = optimize_latent(gen, clip, targets, source, steps=40, lr=0.1, lambda_sim=0.0)
    after = cos_to(clip, gen, result.ws, targets)
    assert (after - before).min() > 0.1, (before, after)
    clip_hist = result.history["clip"]
    assert clip_hist.shape == (40, 2)
    assert (clip_hist[-1] < clip_hist[0] - 0.1).all()
    torch.testing.assert_close(clip_hist[0], 1 - before, rtol=1e-4, atol=1e-5)
    assert result.mode == "edit" and result.images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(result.source_ws, source)


def test_free_generation_starts_from_mean_latent(gen, clip):
    targets = torch.randn(3, clip.embed_dim, generator=torch.Generator().manual_seed(6))
    result = optimize_latent(gen, clip, targets, None, steps=4, lambda_sim=1e6)
    assert result.mode == "generate" and result.ws.shape == (3, gen.num_ws, W_DIM)
    torch.testing.assert_close(result.source_ws, gen.w_avg.expand(3, gen.num_ws, W_DIM))
    assert (result.history["similarity"] == 0).all()  # no similarity term in free generation
    assert (result.ws - result.source_ws).abs().max() > 1e-3


def test_huge_lambda_sim_keeps_w_near_source(gen, clip):
    source = sample_source_ws(gen, 2, seed=4)
    targets = torch.randn(2, clip.embed_dim, generator=torch.Generator().manual_seed(7))
    free = optimize_latent(gen, clip, targets, source, steps=20, lambda_sim=0.0)
    tied = optimize_latent(gen, clip, targets, source, steps=20, lambda_sim=1e4)
    moved_free = (free.ws - source).norm(dim=-1).mean()
    moved_tied = (tied.ws - source).norm(dim=-1).mean()
    assert moved_free > 0.3
    assert moved_tied < 0.05 * moved_free


def test_hard_masked_layers_stay_bit_identical(gen, clip):
    source = sample_source_ws(gen, 2, seed=5) + 0.1 * torch.randn(2, gen.num_ws, W_DIM)
    targets = torch.randn(2, clip.embed_dim)
    mask = LayerMask.preset("coarse", gen.num_ws)  # rows 4-7 frozen
    result = optimize_latent(gen, clip, targets, source, steps=10, layer_weights=mask, adaptive_mask=True)
    assert torch.equal(result.ws[:, 4:], source[:, 4:])
    assert (result.ws[:, :4] - source[:, :4]).abs().max() > 1e-3
    custom = LayerMask.from_lists(frozen=[0, 5], num_ws=gen.num_ws)
    result = optimize_latent(gen, clip, targets, source, steps=5, layer_weights=custom)
    assert torch.equal(result.ws[:, [0, 5]], source[:, [0, 5]])


def test_batched_equals_sequential(gen, clip):
    source = sample_source_ws(gen, 3, seed=8)
    targets = torch.randn(3, clip.embed_dim, generator=torch.Generator().manual_seed(9))
    kwargs = dict(steps=12, lr=0.1, lambda_sim=0.01, adaptive_mask=True)
    batched = optimize_latent(gen, clip, targets, source, **kwargs)
    for b in range(3):
        single = optimize_latent(gen, clip, targets[b:b + 1], source[b:b + 1], **kwargs)
        torch.testing.assert_close(batched.ws[b:b + 1], single.ws, rtol=1e-4, atol=2e-5)
        for term in LOSS_TERMS:
            torch.testing.assert_close(batched.history[term][:, b:b + 1], single.history[term], rtol=1e-4, atol=2e-5)


def test_same_seed_identical_and_random_source(gen, clip):
    targets = torch.randn(2, clip.embed_dim, generator=torch.Generator().manual_seed(10))
    a = optimize_latent(gen, clip, targets, "random", seed=11, steps=6, noise_mode="random")
    b = optimize_latent(gen, clip, targets, "random", seed=11, steps=6, noise_mode="random")
    c = optimize_latent(gen, clip, targets, "random", seed=12, steps=6, noise_mode="random")
    assert torch.equal(a.ws, b.ws) and torch.equal(a.history["total"], b.history["total"])
    assert not torch.equal(a.source_ws, c.source_ws)


def test_weighted_target_set_equals_its_combined_vector(gen, clip):
    source = sample_source_ws(gen, 1, seed=13)
    gen_t = torch.Generator().manual_seed(14)
    pair = unit(torch.randn(1, 2, clip.embed_dim, generator=gen_t))
    mixed = optimize_latent(gen, clip, pair, source, target_weights=[0.25, 0.75], steps=8)
    combined = 0.25 * pair[:, 0] + 0.75 * pair[:, 1]
    # Same direction, so the same trajectory up to the loss scale: compare with the normalised sum
    # scaled back to the combined vector's length through cosine_scale.
    single = optimize_latent(gen, clip, unit(combined), source, steps=8, cosine_scale=combined.norm().item())
    torch.testing.assert_close(mixed.ws, single.ws, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mixed.history["clip"], single.history["clip"], rtol=1e-4, atol=1e-5)


def test_callback_previews_and_cancellation(gen, clip):
    targets = torch.randn(1, clip.embed_dim)
    seen = []
    optimize_latent(gen, clip, targets, "random", steps=7, preview_every=3, callback=seen.append)
    assert [s.step for s in seen] == list(range(1, 8)) and all(s.total == 7 for s in seen)
    assert [s.preview is not None for s in seen] == [False, False, True, False, False, True, True]
    assert seen[2].preview.shape == (1, 3, 32, 32)
    assert set(seen[0].losses) == set(LOSS_TERMS)
    assert seen[3].losses["total"] == pytest.approx(
        seen[3].losses["clip"] + 0.008 * seen[3].losses["similarity"], rel=1e-5)

    calls = []

    def cancel_after_three():
        calls.append(1)
        return len(calls) > 3

    done = []
    with pytest.raises(Cancelled, match="before step 4 of 50"):
        optimize_latent(gen, clip, targets, "random", steps=50, should_cancel=cancel_after_three,
                        callback=done.append)
    assert len(done) == 3
    assert memory._depth == 0  # the CPU allocator hint is lifted even when a run is cancelled

    class Stop(Exception):
        pass

    def raising(info):
        raise Stop()

    with pytest.raises(Stop):  # the ComfyUI adapter's own exception comes through untouched
        optimize_latent(gen, clip, targets, "random", steps=5, callback=raising)


def test_identity_term_needs_a_model_and_reaches_w(gen, clip):
    targets = torch.randn(1, clip.embed_dim)
    source = sample_source_ws(gen, 1, seed=15)
    with pytest.raises(ParameterError, match="id_model"):
        optimize_latent(gen, clip, targets, source, steps=2, lambda_id=0.1)
    torch.manual_seed(0)
    arcface = IRSEBackbone(TINY_IRSE).eval()
    plain = optimize_latent(gen, clip, targets, source, steps=6, lambda_sim=0.0)
    with_id = optimize_latent(gen, clip, targets, source, steps=6, lambda_sim=0.0, lambda_id=5.0, id_model=arcface)
    assert (with_id.history["identity"][2:] > 1e-3).all()  # steps 0-1 still at the source (lr 0 at step 0)
    assert (with_id.ws - plain.ws).abs().max() > 1e-4  # the identity gradient changed the trajectory
    assert (plain.history["identity"] == 0).all()  # not computed when lambda_id = 0


def test_runs_inside_inference_mode():
    with torch.inference_mode():
        gen = make_generator(1)  # every net and tensor created under inference mode, as in ComfyUI
        clip = make_clip(1)
        arcface = IRSEBackbone(TINY_IRSE).eval()
        assert next(arcface.parameters()).is_inference()
        targets = torch.randn(2, clip.embed_dim)
        source = sample_source_ws(gen, 2, seed=16)
        mask = LayerMask.preset("coarse", gen.num_ws, outside_weight=2.0)
        result = optimize_latent(gen, clip, targets, source, steps=8, lambda_sim=0.001, lambda_id=0.5,
                                 id_model=arcface, layer_weights=mask, adaptive_mask=True)
    assert (result.history["clip"][-1] < result.history["clip"][0]).all()
    assert (result.history["identity"][-1] > 0).all()


def test_channels_last_option_keeps_results(gen, clip):
    targets = torch.randn(1, clip.embed_dim, generator=torch.Generator().manual_seed(17))
    previous = gen.synthesis_network.channels_last
    try:
        nchw = optimize_latent(gen, clip, targets, "random", steps=5, channels_last=False)
        nhwc = optimize_latent(gen, clip, targets, "random", steps=5, channels_last=True)
    finally:
        gen.synthesis_network.set_channels_last(previous)
    assert gen.synthesis_network.channels_last == previous
    torch.testing.assert_close(nhwc.ws, nchw.ws, rtol=1e-4, atol=1e-5)


def test_weight_modulation_generator_runs_in_activation_form_and_is_restored(clip):
    gen_w = make_generator()
    gen_w.modulation = "weight"
    targets = torch.randn(2, clip.embed_dim, generator=torch.Generator().manual_seed(18))
    source = sample_source_ws(gen_w, 2, seed=19)
    seen = []
    fast = optimize_latent(gen_w, clip, targets, source, steps=4,
                           callback=lambda info: seen.append(gen_w.modulation))
    assert seen == ["activation"] * 4 and gen_w.modulation == "weight"
    kept = optimize_latent(gen_w, clip, targets, source, steps=4, modulation=None)
    torch.testing.assert_close(fast.ws, kept.ws, rtol=1e-4, atol=1e-5)  # the same function


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(steps=-5), "steps"),
    (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lambda_sim=float("nan")), "lambda_sim"),
    (dict(lambda_id=-1.0), "lambda_id"),
    (dict(layer_weights=[1.0] * 14), "num_ws = 8"),
    (dict(autocast="bf16"), "CUDA only"),
    (dict(noise_mode="loud"), "noise_mode"),
])
def test_bad_settings_raise_parameter_errors(gen, clip, kwargs, match):
    targets = torch.randn(1, clip.embed_dim)
    with pytest.raises(ParameterError, match=match) as error:
        optimize_latent(gen, clip, targets, "random", **kwargs)
    expected = next(iter(kwargs))
    assert error.value.parameter == expected  # so that a front end can name its own input for it


def test_errors_name_the_parameter_at_fault(gen, clip):
    cases = [(dict(targets=torch.randn(1, 512)), "clip"),  # a target from another CLIP space: the CLIP is wrong
             (dict(source_ws=torch.zeros(1, 14, W_DIM)), "source_ws"),
             (dict(targets=torch.randn(2, clip.embed_dim), source_ws=torch.zeros(3, gen.num_ws, W_DIM)), "targets"),
             (dict(lambda_id=0.5, source_ws="random"), "id_model")]
    for kwargs, parameter in cases:
        arguments = {"targets": torch.randn(1, clip.embed_dim), "source_ws": "random", "steps": 1, **kwargs}
        with pytest.raises(ParameterError) as error:
            optimize_latent(gen, clip, arguments.pop("targets"), arguments.pop("source_ws"), **arguments)
        assert error.value.parameter == parameter, (kwargs, str(error.value))


def test_bad_shapes_raise_parameter_errors(gen, clip):
    with pytest.raises(ParameterError, match="embed_dim 24"):
        optimize_latent(gen, clip, torch.randn(1, 512), "random", steps=1)
    with pytest.raises(ParameterError, match="targets: batch 2 does not match.*batch 3"):
        optimize_latent(gen, clip, torch.randn(2, clip.embed_dim), torch.zeros(3, gen.num_ws, W_DIM), steps=1)
    with pytest.raises(ParameterError, match=r"\[B, 8, 32\]"):
        optimize_latent(gen, clip, torch.randn(1, clip.embed_dim), torch.zeros(1, 14, W_DIM), steps=1)
    with pytest.raises(ParameterError, match="NaN"):
        optimize_latent(gen, clip, torch.full((1, clip.embed_dim), math.nan), "random", steps=1)
    with pytest.raises(ParameterError, match="target_weights"):
        optimize_latent(gen, clip, torch.randn(1, 2, clip.embed_dim), "random", target_weights=[1.0], steps=1)
