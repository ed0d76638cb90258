"""Instant edits: StyleSpace rendering, the analysis (Jacobian = finite differences), the edit's behaviour
on tiny random models, layer freezing, the cache (hit, invalidation, damage, resume) and the command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sgim_nodes.clip import ClipModel, build_tiny_clip, save_open_clip_state_dict, tiny_clip_config
from sgim_nodes.errors import Cancelled, ModelFileError, ParameterError
from sgim_nodes.instant import (AnalysisSettings, InstantEditor, analyze_styles, cached_directions, follow_codes,
                                instant_edit, reference_embedding)
from sgim_nodes.jobs.instant import InstantEditRequest, run_instant_edit
from sgim_nodes.jobs.run import QuietRun
from sgim_nodes.optimize.loop import sample_source_ws
from sgim_nodes.stylegan import Generator, GeneratorConfig, StyleGAN3Config, StyleGAN3Generator, load_generator
from sgim_nodes.stylegan.stylespace import channel_index, flatten_styles, ws_from_styles

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = [("stylegan2", "rosinality_tiny.pt", "rosinality_tiny_expected.safetensors", "wplus"),
            ("stylegan2", "nvlabs_tiny.pkl", "nvlabs_tiny_expected.safetensors", "ws_random"),
            ("stylegan_more", "ada_cond_tiny.pkl", "ada_cond_tiny_expected.safetensors", "ws_c_soft"),
            ("stylegan_more", "tf_sg2ada_cond_tiny.pkl", "tf_sg2ada_cond_tiny_expected.safetensors", "ws_random"),
            ("stylegan_more", "sg3t_tiny.pkl", "sg3t_tiny_expected.safetensors", "ws_random"),
            ("stylegan_more", "sg3r_tiny.pkl", "sg3r_tiny_expected.safetensors", "ws_random")]


def tiny_stylegan2(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(resolution=32, z_dim=32, w_dim=32, n_mapping=2,
                                    channels={4: 16, 8: 16, 16: 12, 32: 8}))
    with torch.no_grad():
        for name, tensor in gen.named_parameters():
            if "bias" in name or "noise_strength" in name:
                tensor.add_(torch.randn_like(tensor) * 0.2)
    return gen


@pytest.fixture(scope="module")
def clip():
    return ClipModel(build_tiny_clip(32, seed=0), "sgim-tiny-clip", tokenizer=None)


@pytest.fixture(scope="module")
def generator():
    return tiny_stylegan2()


@pytest.fixture(scope="module")
def directions(generator, clip):
    return analyze_styles(generator, clip, AnalysisSettings(samples=16, std_samples=512))


def clip_distance(clip, images, targets):
    return 1 - (clip.image_features(images) * targets).sum(-1)


# ------------------------------------------------------------------------------------ StyleSpace

@pytest.mark.parametrize("folder,name,expected,key", FIXTURES)
def test_style_render_equals_wplus_render_on_the_shared_fixtures(fixtures_dir, folder, name, expected, key):
    """Both families, conditional ones included: rendering the styles of a W+ code is the W+ render (and that
    still reproduces the reference image where the fixture has one for that code)."""
    gen = load_generator(fixtures_dir / folder / name)
    e = load_file(str(fixtures_dir / folder / expected))
    ws = e[key]
    with torch.no_grad():
        styles = gen.styles(ws)
        from_styles = gen.synthesis_styles(styles)
        assert (from_styles - gen.synthesis(ws)).abs().max() <= 1e-6
        assert (gen.synthesis_styles(flatten_styles(styles)) - from_styles).abs().max() <= 1e-6  # flat form
    reference = {"ws_random": "img_ws_random", "wplus": "img_wplus"}.get(key)
    if reference:
        torch.testing.assert_close(from_styles, e[reference], atol=1e-4, rtol=1e-4)
    table = gen.style_layers()
    assert [s.shape[1] for s in styles] == [layer.channels for layer in table]
    assert {layer.row for layer in table} == set(range(gen.num_ws))  # every W+ row drives some layer
    index = channel_index(gen)
    assert index.shape == (table[-1].stop, 3) and int(index[-1, 0]) == len(table) - 1


def test_style_render_of_a_conditional_stylegan3():
    torch.manual_seed(0)
    gen = StyleGAN3Generator(StyleGAN3Config(resolution=16, z_dim=16, w_dim=16, c_dim=3, channel_base=256,
                                             channel_max=16, num_layers=4, num_critical=1, margin_size=2,
                                             filter_size=4))
    c = F.one_hot(torch.tensor([0, 2]), 3).float()
    ws = gen.mapping(torch.randn(2, 16), truncation_psi=0.8, c=c)
    with torch.no_grad():
        assert (gen.synthesis_styles(gen.styles(ws)) - gen.synthesis(ws)).abs().max() <= 1e-6
    assert [l.kind for l in gen.style_layers()] == ["input"] + ["conv"] * 4 + ["torgb"]


def test_strips_and_weight_modulation_work_from_styles():
    """The fast paths from styles: activation form == weight form, and the last block in strips (forced on a
    64 px model) gives the same image and style gradient as the plain path."""
    torch.manual_seed(0)
    gen = Generator(GeneratorConfig(resolution=64, z_dim=16, w_dim=16, n_mapping=1,
                                    channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})).double()
    ws = torch.randn(2, gen.num_ws, gen.w_dim, dtype=torch.float64)
    results = {}
    for mode, strips in (("activation", 1), ("activation", 4), ("weight", 1)):
        gen.modulation = mode
        gen.synthesis_network.last_block_strips = strips
        flat = flatten_styles(gen.styles(ws)).detach().requires_grad_(True)
        img = gen.synthesis_network.forward_styles(list(torch.split(flat, [l.channels for l in gen.style_layers()],
                                                                    dim=1)))
        (img * torch.linspace(-1, 1, img.numel(), dtype=img.dtype).view_as(img)).sum().backward()
        results[(mode, strips)] = (img.detach(), flat.grad)
    base_img, base_grad = results[("activation", 1)]
    for key, (img, grad) in results.items():
        torch.testing.assert_close(img, base_img, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(grad, base_grad, atol=1e-10, rtol=1e-8)


def test_styles_refused_clearly(generator):
    styles = generator.styles(torch.zeros(1, generator.num_ws, generator.w_dim))
    with pytest.raises(ParameterError, match="expected 11 style vectors"):
        generator.synthesis_styles(styles[:-1])
    bad = [s.clone() for s in styles]
    bad[2][0, 0] = float("nan")
    with pytest.raises(ParameterError, match="conv1 contains NaN"):
        generator.synthesis_styles(bad)
    with pytest.raises(ParameterError, match=r"layer torgb0 expects \[1, 16\]"):
        generator.synthesis_styles([styles[0], styles[0][:, :3]] + styles[2:])


def test_ws_from_styles_inverts_where_the_affine_maps_allow(generator):
    ws = sample_source_ws(generator, 2, seed=3)
    styles = generator.styles(ws)
    moved = [s + 0.1 * torch.randn_like(s) for s in styles]
    found, residual = ws_from_styles(generator, moved, ws)
    # every row drives at most 16 + 16 = 32 = w_dim channels here: the change is reached exactly
    assert residual.max() < 1e-5
    for a, b in zip(generator.styles(found), moved):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------ analysis

def test_jacobian_relevance_equals_finite_differences():
    """float64: the reverse-mode Jacobian equals central differences with k = 1e-5 to a relative 1e-6 (it is
    their k -> 0 limit; the generator's leaky ReLUs make larger k differ at first order where units cross 0)."""
    gen = tiny_stylegan2(1).double()
    clip64 = ClipModel(build_tiny_clip(32, seed=1).double(), "tiny64", tokenizer=None)
    exact = analyze_styles(gen, clip64, AnalysisSettings(samples=2, std_samples=64, method="jacobian"))
    finite = analyze_styles(gen, clip64, AnalysisSettings(samples=2, std_samples=64, method="finite", k=1e-5))
    a, b = exact.directions.double(), finite.directions.double()
    assert (a - b).norm() / a.norm() < 1e-6
    assert a.abs().max() > 1e-3  # not trivially zero


def test_jacobian_close_to_styleclips_finite_steps_in_float32(generator, clip):
    """At StyleCLIP's step (k = 1 std) in float32 the directions still point the same way (cos > 0.95 on average)."""
    settings = dict(samples=4, std_samples=256)
    exact = analyze_styles(generator, clip, AnalysisSettings(method="jacobian", **settings))
    finite = analyze_styles(generator, clip, AnalysisSettings(method="finite", k=1.0, **settings))
    cos = F.cosine_similarity(exact.directions, finite.directions, dim=1)
    assert cos.mean() > 0.95


def test_analysis_is_deterministic_and_records_its_settings(generator, clip, directions):
    again = analyze_styles(generator, clip, AnalysisSettings(samples=16, std_samples=512))
    assert torch.equal(again.directions, directions.directions)
    assert directions.info["settings"]["samples"] == 16 and directions.info["settings"]["truncation"] == 0.7
    assert directions.info["channel_images"] == 16 * directions.num_channels
    assert (directions.style_std > 0).all()


def test_analysis_progress_and_cancel(generator, clip):
    calls = []
    analyze_styles(generator, clip, AnalysisSettings(samples=6, batch=2, std_samples=64),
                   run=QuietRun(on_progress=lambda done, total: calls.append((done, total))))
    assert calls == [(0, 6), (2, 6), (4, 6), (6, 6)]
    with pytest.raises(Cancelled):
        analyze_styles(generator, clip, AnalysisSettings(samples=6, batch=2, std_samples=64),
                       run=QuietRun(cancel_after=2))


def test_settings_checked():
    with pytest.raises(ParameterError, match="samples"):
        AnalysisSettings(samples=0)
    with pytest.raises(ParameterError, match="method"):
        AnalysisSettings(method="guess")


def test_command_line_defaults_are_the_library_defaults():
    from sgim_nodes.instant.cli import DEFAULTS

    settings = AnalysisSettings()
    assert {k: getattr(settings, k) for k in DEFAULTS} == DEFAULTS


# ------------------------------------------------------------------------------------ instant edit

def random_targets(batch: int, seed: int, dim: int = 32) -> torch.Tensor:
    return F.normalize(torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("space,alphas", [("wplus", (0.25, 1.0)), ("style", (1.0, 3.0))])
def test_instant_edit_lowers_the_clip_distance_for_most_seeds(generator, clip, directions, space, alphas):
    """16 sources x random unit targets: most codes get closer; a larger alpha moves them further toward the
    target, and a larger beta uses fewer channels. Both spaces (the W+ pull-back and StyleCLIP's StyleSpace
    edit, judged on its W+ projection, exact here)."""
    source = sample_source_ws(generator, 16, seed=1)
    targets = random_targets(16, 5)
    small, large = alphas
    with torch.no_grad():
        before = clip_distance(clip, generator.synthesis(source), targets)
        reduction, channels = {}, {}
        for alpha in alphas:
            for beta in (0.0, 0.15):
                r = instant_edit(generator, clip, directions, targets, source, alpha=alpha, beta=beta, space=space)
                after = clip_distance(clip, generator.synthesis(r.ws), targets)
                reduction[alpha, beta] = before - after
                channels[alpha, beta] = r.channels.float().mean()
                if space == "style":  # the exact StyleSpace edit renders the same (the projection is exact here)
                    exact = clip_distance(clip, generator.synthesis_styles(r.styles), targets)
                    torch.testing.assert_close(exact, after, atol=1e-4, rtol=1e-4)
    for key, red in reduction.items():
        assert (red > 0).sum() >= 13, key
    for beta in (0.0, 0.15):
        assert reduction[large, beta].mean() > 1.5 * reduction[small, beta].mean()
    assert channels[large, 0.15] < 0.5 * channels[large, 0.0]


def test_wplus_edit_moves_by_alpha_spreads(generator, clip, directions):
    """alpha is the W+ displacement in units of the generator's row spread: linear, and the default direction
    beats the projected StyleSpace edit at equal displacement (why "wplus" is the default)."""
    source = sample_source_ws(generator, 8, seed=2)
    targets = random_targets(8, 3)
    editor = InstantEditor(generator, directions)
    one = instant_edit(generator, clip, directions, targets, source, alpha=1.0, editor=editor)
    two = instant_edit(generator, clip, directions, targets, source, alpha=2.0, editor=editor)
    shift = (one.ws - source).flatten(1).norm(dim=1)
    torch.testing.assert_close(shift, torch.full_like(shift, editor.w_spread), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close((two.ws - source).flatten(1).norm(dim=1), 2 * shift, rtol=1e-4, atol=1e-5)
    # both a quarter of a row spread away from the source (displacement is linear in alpha in both spaces)
    style = instant_edit(generator, clip, directions, targets, source, alpha=1.0, space="style")
    style_shift = float((style.ws - source).flatten(1).norm(dim=1).mean())
    style = instant_edit(generator, clip, directions, targets, source, space="style",
                         alpha=0.25 * editor.w_spread / style_shift)
    matched = instant_edit(generator, clip, directions, targets, source, alpha=0.25, editor=editor)
    with torch.no_grad():
        before = clip_distance(clip, generator.synthesis(source), targets)
        gain_wplus = before - clip_distance(clip, generator.synthesis(matched.ws), targets)
        gain_style = before - clip_distance(clip, generator.synthesis(style.ws), targets)
    assert gain_wplus.mean() > 3 * gain_style.mean()  # measured: 0.024 against 0.003


def test_instant_edit_is_deterministic_batched_and_takes_weighted_sets(generator, clip, directions):
    source = sample_source_ws(generator, 3, seed=2)
    targets = random_targets(3, 6)
    a = instant_edit(generator, clip, directions, targets, source)
    b = instant_edit(generator, clip, directions, targets, source)
    assert torch.equal(a.ws, b.ws)
    one = instant_edit(generator, clip, directions, targets[1:2], source[1:2])
    torch.testing.assert_close(one.ws[0], a.ws[1], atol=1e-5, rtol=1e-5)  # a batch = one by one
    pair = torch.stack([targets, random_targets(3, 7)], dim=1)  # [B, 2, D]
    only_first = instant_edit(generator, clip, directions, pair, source, target_weights=[1.0, 0.0])
    torch.testing.assert_close(only_first.ws, a.ws, atol=1e-5, rtol=1e-5)
    mixed = instant_edit(generator, clip, directions, pair, source, target_weights=[1.0, 1.0])
    assert not torch.allclose(mixed.ws, a.ws)
    editor = InstantEditor(generator, directions)  # the live path: reference once, then one call per update
    ref = reference_embedding("source", generator=generator, clip=clip, source_ws=source)
    torch.testing.assert_close(editor.toward(source, targets, ref).ws, a.ws, atol=1e-6, rtol=1e-6)
    with pytest.raises(ParameterError, match="alpha"):
        instant_edit(generator, clip, directions, targets, source, alpha=float("nan"))
    with pytest.raises(ParameterError, match="embed_dim|width"):
        instant_edit(generator, clip, directions, random_targets(3, 1, dim=16), source)


def test_frozen_layers_stay_bit_identical(generator, clip, directions):
    source = sample_source_ws(generator, 4, seed=4)
    freedom = [0, 0, 1, 1, 0.5, 1, 0, 0]
    r = instant_edit(generator, clip, directions, random_targets(4, 8), source, layer_freedom=freedom)
    frozen = [i for i, f in enumerate(freedom) if f == 0]
    free = [i for i, f in enumerate(freedom) if f > 0]
    assert torch.equal(r.ws[:, frozen], source[:, frozen])
    assert (r.ws[:, free] != source[:, free]).any(dim=-1).all()
    source_styles = generator.styles(source)
    for layer, s, s0 in zip(generator.style_layers(), r.styles, source_styles):
        if freedom[layer.row] == 0:
            assert torch.equal(s, s0), layer.name
    coarse = instant_edit(generator, clip, directions, random_targets(4, 8), source, layer_freedom="coarse")
    assert torch.equal(coarse.ws[:, 4:], source[:, 4:])


def test_references(generator, clip, directions):
    source = sample_source_ws(generator, 2, seed=9)
    targets = random_targets(2, 3)
    mean = reference_embedding("mean", directions=directions)
    assert mean.shape == (1, 32)
    neutral = instant_edit(generator, clip, directions, targets, source, reference="neutral", neutral=random_targets(1, 4))
    assert neutral.ws.shape == source.shape
    with pytest.raises(ParameterError, match="neutral"):
        instant_edit(generator, clip, directions, targets, source, reference="neutral")
    with pytest.raises(ParameterError, match="reference"):
        instant_edit(generator, clip, directions, targets, source, reference="nearby")


def test_stylegan3_instant_edit(clip):
    torch.manual_seed(0)
    config = StyleGAN3Config(resolution=16, z_dim=16, w_dim=16, channel_base=256, channel_max=16, num_layers=4,
                             num_critical=1, margin_size=2, filter_size=4)
    gen = StyleGAN3Generator(config)
    d = analyze_styles(gen, clip, AnalysisSettings(samples=4, std_samples=128))
    source = sample_source_ws(gen, 6, seed=1)
    targets = random_targets(6, 2)
    r = instant_edit(gen, clip, d, targets, source, alpha=0.5)
    assert torch.equal(r.ws[:, 0], source[:, 0])  # the input transform is not a semantic channel: untouched
    with torch.no_grad():
        exact = clip_distance(clip, gen.synthesis_styles(r.styles), targets)
        before = clip_distance(clip, gen.synthesis(source), targets)
    assert (exact < before).sum() >= 4


def test_follow_codes_smooth_and_keep_frozen_rows(generator, clip, directions):
    source = sample_source_ws(generator, 1, seed=1)
    editor = InstantEditor(generator, directions, layer_freedom="coarse")
    ref = reference_embedding("source", generator=generator, clip=clip, source_ws=source)
    frames = random_targets(12, 11)
    rough = follow_codes(editor, source, ref, frames, fps=12, smoothing_seconds=0)
    smooth = follow_codes(editor, source, ref, frames, fps=12, smoothing_seconds=0.5)
    assert rough.shape == (12, generator.num_ws, generator.w_dim)
    assert torch.equal(smooth[:, 4:], source.expand(12, -1, -1)[:, 4:])
    jump = lambda ws: (ws[1:] - ws[:-1]).norm(dim=(1, 2)).mean()  # noqa: E731
    assert jump(smooth) < 0.7 * jump(rough)
    single = instant_edit(generator, clip, directions, frames[3:4], source, editor=editor)
    torch.testing.assert_close(rough[3:4], single.ws, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ cache and job

def test_cache_hit_invalidation_and_damage(tmp_path, generator, clip):
    from sgim_nodes.stylegan import save_generator

    gen_file = tmp_path / "g.safetensors"
    save_generator(generator, gen_file)
    loaded = load_generator(gen_file)
    cache = tmp_path / "cache.safetensors"
    settings = AnalysisSettings(samples=2, std_samples=64)
    first, hit = cached_directions(loaded, clip, generator_file=gen_file, cache=cache, settings=settings)
    assert not hit and cache.is_file()
    second, hit = cached_directions(loaded, clip, generator_file=gen_file, cache=cache, settings=settings)
    assert hit and torch.equal(first.directions, second.directions)
    # another generator file content: stale, recomputed
    other = tiny_stylegan2(5)
    save_generator(other, gen_file)
    _, hit = cached_directions(load_generator(gen_file), clip, generator_file=gen_file, cache=cache, settings=settings)
    assert not hit
    # another CLIP: recomputed
    other_clip = ClipModel(build_tiny_clip(32, seed=3), "sgim-tiny-clip", tokenizer=None)
    _, hit = cached_directions(load_generator(gen_file), other_clip, generator_file=gen_file, cache=cache,
                               settings=settings)
    assert not hit
    # foreign safetensors at the cache path: recomputed over it
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(cache))
    _, hit = cached_directions(load_generator(gen_file), other_clip, generator_file=gen_file, cache=cache,
                               settings=settings)
    assert not hit
    # damaged: truncated file, and one whose tensors do not fit its record
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cache.safetensors.*delete it"):
        cached_directions(load_generator(gen_file), other_clip, generator_file=gen_file, cache=cache,
                          settings=settings)


def test_cache_with_wrong_tensors_refused(tmp_path, generator, clip):
    from sgim_nodes.instant.cache import read_directions
    from safetensors import safe_open
    from safetensors.torch import save_file

    cache = tmp_path / "c.safetensors"
    settings = AnalysisSettings(samples=2, std_samples=64)
    cached_directions(generator, clip, cache=cache, settings=settings)
    with safe_open(str(cache), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["style_std"] = tensors["style_std"][:-1]
    save_file(tensors, str(cache), metadata=metadata)
    with pytest.raises(ModelFileError, match="damaged"):
        read_directions(cache)


def test_interrupted_analysis_resumes(tmp_path, generator, clip):
    cache = tmp_path / "r.safetensors"
    settings = AnalysisSettings(samples=6, batch=2, std_samples=64)
    with pytest.raises(Cancelled):
        cached_directions(generator, clip, cache=cache, settings=settings, run=QuietRun(cancel_after=3))
    partial = cache.with_name(cache.name + ".partial")
    assert partial.is_file() and not cache.exists()
    calls = []
    resumed, _ = cached_directions(generator, clip, cache=cache, settings=settings,
                                   run=QuietRun(on_progress=lambda done, total: calls.append(done)))
    assert calls[0] == 4  # two chunks were done before the cancel
    assert resumed.info["resumed_from"] == 4 and not partial.exists()
    fresh = analyze_styles(generator, clip, settings)
    torch.testing.assert_close(resumed.directions, fresh.directions, atol=1e-6, rtol=1e-5)


def test_job_reports_distances(generator, clip, directions):
    source = sample_source_ws(generator, 4, seed=1)
    targets = random_targets(4, 5)
    outcome = run_instant_edit(InstantEditRequest(generator, clip, targets, source, directions=directions,
                                                  alpha=2.0), QuietRun())
    assert outcome.distance_after.shape == (4,)
    assert (outcome.distance_after < outcome.distance_before).sum() >= 3
    direct = instant_edit(generator, clip, directions, targets, source, alpha=2.0)
    assert torch.equal(direct.ws, outcome.result.ws)  # one code path


def test_analyze_command(tmp_path, generator, capsys):
    from sgim_nodes.__main__ import main
    from sgim_nodes.stylegan import save_generator

    gen_file = tmp_path / "g.safetensors"
    save_generator(generator, gen_file)
    clip_file = tmp_path / "clip.safetensors"
    save_open_clip_state_dict(build_tiny_clip(32, seed=0), clip_file, config=tiny_clip_config(32))
    cache = tmp_path / "a.safetensors"
    argv = ["analyze", "--generator", str(gen_file), "--clip", str(clip_file), "--samples", "2",
            "--std-samples", "64", "--cache", str(cache), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "analysed" in out and "channels x 2 samples" in out
    assert main(argv) == 0
    assert "cache hit" in capsys.readouterr().out
    assert main(argv[:-4] + ["--samples", "0"]) == 1
    assert "--samples" in capsys.readouterr().err
    from sgim_nodes.fileio import read_safetensors_metadata

    meta = read_safetensors_metadata(cache)
    assert meta["sgim_kind"] == "instant_directions" and meta["generator"].startswith("file:")
    assert json.loads(meta["settings"])["samples"] == 2 and json.loads(meta["config"])["seconds"] > 0


def test_warm_start_is_never_worse_than_the_source(generator, clip, directions):
    """The optimiser's objective at the warm start is at most that of the source (which is a candidate), and
    with a light similarity weight the instant direction is taken for most codes; the optimiser accepts it."""
    from sgim_nodes.instant import warm_start_codes
    from sgim_nodes.optimize import optimize_latent
    from sgim_nodes.optimize.objective import similarity_terms

    source = sample_source_ws(generator, 8, seed=6)
    targets = random_targets(8, 9)
    editor = InstantEditor(generator, directions)

    def objective(ws, lambda_sim):
        with torch.no_grad():
            return clip_distance(clip, generator.synthesis(ws), targets) + lambda_sim * similarity_terms(
                ws, source, torch.ones(generator.num_ws)).sum(-1)

    for lambda_sim in (0.008, 0.0005):
        init, alpha = warm_start_codes(generator, clip, editor, targets, source, lambda_sim=lambda_sim)
        assert (objective(init, lambda_sim) <= objective(source, lambda_sim) + 1e-6).all()
    assert (alpha > 0).sum() >= 6
    result = optimize_latent(generator, clip, targets, source, steps=2, init_ws=init, lambda_sim=0.0005,
                             return_images=False)
    assert result.ws.shape == source.shape


def test_instant_keyframes_drive_the_trajectory(generator, clip, directions):
    """Dense instant keyframes go straight into the music video's trajectory (what --follow instant does)."""
    from sgim_nodes.animate.features import FEATURE_NAMES, AudioFeatures
    from sgim_nodes.animate.timeline import make_timeline
    from sgim_nodes.animate.trajectory import Trajectory
    from sgim_nodes.instant import instant_keyframes

    source = sample_source_ws(generator, 1, seed=1)
    editor = InstantEditor(generator, directions)
    ref = reference_embedding("source", generator=generator, clip=clip, source_ws=source)
    times = [0.25 * k for k in range(9)]
    keyframes = instant_keyframes(editor, source, ref, times, random_targets(9, 2)[:, None])
    assert keyframes.codes.shape == (9, generator.num_ws, generator.w_dim) and len(keyframes.labels) == 9
    timeline = make_timeline(2.0, 12, None, None)
    features = AudioFeatures(timeline, {name: [0.0] * timeline.frames for name in FEATURE_NAMES})
    codes = Trajectory(keyframes, features, reactivity=0).codes()
    assert codes.shape == (timeline.frames, generator.num_ws, generator.w_dim)
    torch.testing.assert_close(codes[3], keyframes.codes[1], atol=1e-5, rtol=1e-5)  # frame 3 = 0.25 s


def test_cache_of_any_settings_serves_edits_that_ask_for_none(tmp_path, generator, clip):
    """An ``analyze --samples N`` run is what later edits use; explicit other settings analyse again."""
    cache = tmp_path / "s.safetensors"
    first, _ = cached_directions(generator, clip, cache=cache, settings=AnalysisSettings(samples=3, std_samples=64))
    again, hit = cached_directions(generator, clip, cache=cache)
    assert hit and torch.equal(again.directions, first.directions)
    _, hit = cached_directions(generator, clip, cache=cache, settings=AnalysisSettings(samples=2, std_samples=64))
    assert not hit
