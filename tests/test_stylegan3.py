"""StyleGAN3 (T and R): the NVlabs reference fixtures, other configurations through a real-layout pickle
writer, the design formulas against an independent transcription, safe loading, our file format,
layer presets and the optimiser end to end."""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sgim_nodes.errors import ModelFileError, ParameterError, UnsafeFileError
from sgim_nodes.optimize.layer_mask import LayerMask, preset_layers
from sgim_nodes.safe_pickle import PlainObject
from sgim_nodes.stylegan import (StyleGAN3Config, StyleGAN3Generator, load_generator, nvlabs_stylegan3_state,
                                 save_generator)
from sgim_nodes.stylegan.stylegan3 import design_layers, filtered_lrelu, lowpass_filter
from test_stylegan_files import PERSISTENT, RunsCommand, write_nvlabs_pickle

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def more_dir(fixtures_dir):
    return fixtures_dir / "stylegan_more"


# ------------------------------------------------------------------------------------ reference fixtures

@pytest.mark.parametrize("kind", ["sg3t", "sg3r"])
def test_reproduces_the_nvlabs_reference_tensors(more_dir, kind):
    gen = load_generator(more_dir / f"{kind}_tiny.pkl")
    expected = load_file(str(more_dir / f"{kind}_tiny_expected.safetensors"))
    assert gen.family == "stylegan3" and gen.num_ws == 8 and gen.resolution == 32
    assert gen.config.use_radial_filters == (kind == "sg3r")
    torch.testing.assert_close(gen.w_avg, expected["w_avg"], atol=0, rtol=0)
    with torch.no_grad():
        ws = gen.mapping(expected["z"])
        torch.testing.assert_close(ws, expected["ws"], **TOL)
        torch.testing.assert_close(gen.synthesis(ws), expected["img"], **TOL)
        torch.testing.assert_close(gen.synthesis(gen.mapping(expected["z"], truncation_psi=0.5)),
                                   expected["img_psi05"], **TOL)
        torch.testing.assert_close(gen.synthesis(expected["ws_random"]), expected["img_ws_random"], **TOL)
        random_noise = gen.synthesis(expected["ws_random"], noise_mode="random")  # StyleGAN3 has no noise inputs
        torch.testing.assert_close(random_noise, expected["img_ws_random"], **TOL)
        gen.set_input_transform(expected["transform"])
        torch.testing.assert_close(gen.synthesis(ws), expected["img_transformed"], **TOL)
        gen.set_input_transform(torch.eye(3))
        torch.testing.assert_close(gen.synthesis(ws), expected["img"], **TOL)


def test_malformed_fixtures_refused(more_dir):
    with pytest.raises(UnsafeFileError, match=r"sg3t_bad_global\.pkl.*os\.system"):
        load_generator(more_dir / "sg3t_bad_global.pkl")
    with pytest.raises(ModelFileError, match=r"sg3t_bad_class\.pkl.*os\.system"):
        load_generator(more_dir / "sg3t_bad_class.pkl")


# ------------------------------------------------------------------------------------ random generators + writer

def perturbed3(config: StyleGAN3Config, seed: int = 0) -> StyleGAN3Generator:
    """A random StyleGAN3 whose constant-initialised parameters are perturbed (so a loader that drops
    them fails), with magnitude_ema set to each layer's real input mean square (sane activations)."""
    torch.manual_seed(seed)
    gen = StyleGAN3Generator(config)
    net = gen.synthesis_network
    with torch.no_grad():
        for bias in gen.mapping_network.biases:
            bias.normal_(0, 0.1)
        if config.c_dim:
            gen.mapping_network.label_bias.normal_(0, 0.5)
        net.input.affine_weight.normal_(0, 0.2)
        net.input.affine_bias.add_(torch.randn(4) * 0.2)
        for layer in net.layers:
            layer.affine_bias.add_(torch.randn_like(layer.affine_bias) * 0.2)
            layer.bias.normal_(0, 0.1)
        classes = torch.nn.functional.one_hot(torch.arange(8) % config.c_dim, config.c_dim).float() \
            if config.c_dim else None
        ws = gen.mapping(torch.randn(8, config.z_dim), c=classes)
        x = net.input(ws[:, 0])
        for index, layer in enumerate(net.layers):  # in order: each layer's input depends on the gains before it
            layer.magnitude_ema.fill_(float(x.square().mean()) * (0.6 + 0.8 * torch.rand(()).item()))
            x = layer(x, ws[:, index + 1])
        gen.w_avg.copy_(gen.estimate_w_avg(256))
    return gen


def _record(class_name: str, state: dict) -> PlainObject:
    meta = {"type": "class", "version": 6, "module_src": "# source omitted", "class_name": class_name,
            "state": state}
    return PlainObject(PERSISTENT, (meta,))


def _module(class_name: str, attrs: dict, params=(), buffers=(), modules=(), init_kwargs=None) -> PlainObject:
    state = {"training": False, "_parameters": collections.OrderedDict(params),
             "_buffers": collections.OrderedDict(buffers), "_non_persistent_buffers_set": set(),
             "_modules": collections.OrderedDict(modules), **attrs, "_init_args": (),
             "_init_kwargs": dict(init_kwargs if init_kwargs is not None else attrs)}
    return _record(class_name, state)


def _fc(sd: dict, key: str, weight_gain: float, bias_gain: float) -> PlainObject:
    weight = sd[key + ".weight"]
    return _module("FullyConnectedLayer", {"in_features": weight.shape[1], "out_features": weight.shape[0],
                                           "activation": "linear", "weight_gain": weight_gain, "bias_gain": bias_gain},
                   params=[("weight", weight), ("bias", sd[key + ".bias"])])


def nvlabs_tree(gen: StyleGAN3Generator, training_copy: StyleGAN3Generator | None = None) -> dict:
    """The persistence-record tree of an NVlabs stylegan3 snapshot for ``gen`` (as ``G_ema``): the
    module structure, plain attributes (numpy types where NVlabs has them) and init kwargs."""
    init_kwargs, sd = nvlabs_stylegan3_state(gen)
    cfg = gen.config
    mapping_layers = [(f"fc{i}", _fc(sd, f"mapping.fc{i}", cfg.mapping_lr_mul / math.sqrt(sd[f"mapping.fc{i}.weight"]
                                                                                         .shape[1]), cfg.mapping_lr_mul))
                      for i in range(cfg.n_mapping)]
    # A conditional mapping's class embedding is a FullyConnectedLayer (lr multiplier 1) registered first;
    # an unconditional one has the plain attribute embed = None.
    embed = [("embed", _fc(sd, "mapping.embed", 1 / math.sqrt(cfg.c_dim), 1.0))] if cfg.c_dim else []
    mapping = _module("MappingNetwork", {"z_dim": cfg.z_dim, "c_dim": cfg.c_dim, "w_dim": cfg.w_dim,
                                         "num_ws": cfg.num_ws, "num_layers": cfg.n_mapping, "w_avg_beta": 0.998,
                                         **({} if cfg.c_dim else {"embed": None})},
                      buffers=[("w_avg", sd["mapping.w_avg"])], modules=embed + mapping_layers)
    inp_design, designs = design_layers(cfg)
    affine_gain = 1 / math.sqrt(cfg.w_dim)
    size = np.array([inp_design.size] * 2, dtype=np.int64)
    inp = _module("SynthesisInput", {"w_dim": cfg.w_dim, "channels": inp_design.channels, "size": size,
                                     "sampling_rate": np.float64(inp_design.sampling_rate),
                                     "bandwidth": np.float64(inp_design.bandwidth)},
                  params=[("weight", sd["synthesis.input.weight"])],
                  buffers=[(k, sd[f"synthesis.input.{k}"]) for k in ("transform", "freqs", "phases")],
                  modules=[("affine", _fc(sd, "synthesis.input.affine", affine_gain, 1.0))])
    layers = []
    for d in designs:
        key = f"synthesis.{d.name}"
        attrs = {"w_dim": cfg.w_dim, "is_torgb": d.is_torgb, "is_critically_sampled": d.is_critically_sampled,
                 "use_fp16": np.bool_(True), "in_channels": d.in_channels, "out_channels": d.out_channels,
                 "in_size": np.array([d.in_size] * 2), "out_size": np.array([d.out_size] * 2),
                 "in_sampling_rate": d.in_sampling_rate, "out_sampling_rate": d.out_sampling_rate,
                 "tmp_sampling_rate": d.tmp_sampling_rate, "in_cutoff": np.float64(d.in_cutoff),
                 "out_cutoff": np.float64(d.out_cutoff), "in_half_width": np.float64(d.in_half_width),
                 "out_half_width": np.float64(d.out_half_width), "conv_kernel": d.conv_kernel,
                 "conv_clamp": cfg.conv_clamp, "up_factor": d.up_factor, "up_taps": d.up_taps,
                 "down_factor": d.down_factor, "down_taps": d.down_taps, "down_radial": d.down_radial,
                 "padding": list(d.padding)}
        buffers = [("magnitude_ema", sd[key + ".magnitude_ema"])]
        buffers += [(f, sd.get(f"{key}.{f}")) for f in ("up_filter", "down_filter")]  # None for ToRGB, as NVlabs
        layers.append((d.name, _module("SynthesisLayer", attrs, params=[("weight", sd[key + ".weight"]),
                                                                       ("bias", sd[key + ".bias"])],
                                       buffers=buffers, modules=[("affine", _fc(sd, key + ".affine", affine_gain, 1.0))])))
    synthesis = _module("SynthesisNetwork", {"w_dim": cfg.w_dim, "num_ws": cfg.num_ws, "img_resolution": cfg.resolution,
                                             "img_channels": cfg.img_channels, "num_layers": cfg.num_layers,
                                             "num_critical": cfg.num_critical, "margin_size": cfg.margin_size,
                                             "output_scale": cfg.output_scale, "num_fp16_res": 4,
                                             "layer_names": [d.name for d in designs]},
                        modules=[("input", inp)] + layers)
    g_ema = _module("Generator", {"z_dim": cfg.z_dim, "c_dim": cfg.c_dim, "w_dim": cfg.w_dim,
                                  "img_resolution": cfg.resolution, "img_channels": cfg.img_channels,
                                  "num_ws": cfg.num_ws},
                    modules=[("synthesis", synthesis), ("mapping", mapping)], init_kwargs=init_kwargs)
    tree = {"G": nvlabs_tree(training_copy)["G_ema"] if training_copy is not None else g_ema, "D": None,
            "G_ema": g_ema, "augment_pipe": None, "training_set_kwargs": {"resolution": cfg.resolution}}
    return tree


def state_of(record: PlainObject, *names: str) -> dict:
    for name in names:
        record = record.args[0]["state"]["_modules"][name]
    return record.args[0]["state"]


def same_images(a, b, atol=2e-5):  # mapping weights are rescaled on the way: float32 rounding
    z = torch.randn(3, a.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(b(z, truncation_psi=0.7), a(z, truncation_psi=0.7), atol=atol, rtol=1e-4)


OTHER_CONFIGS = {
    # narrower at the top than at the bottom, z_dim != w_dim, 3 mapping layers, fewer critical layers
    "T_64px_4layers": dict(resolution=64, z_dim=24, w_dim=40, n_mapping=3, channel_base=1024, channel_max=48,
                           num_layers=4, num_critical=1),
    "R_16px_3layers_noclamp": dict(resolution=16, z_dim=16, w_dim=16, n_mapping=1, channel_base=512,
                                   channel_max=40, num_layers=3, conv_clamp=None, margin_size=6,
                                   conv_kernel=1, use_radial_filters=True),
    "T_128px_8layers_filter4": dict(resolution=128, z_dim=32, w_dim=32, n_mapping=2, channel_base=1024,
                                    channel_max=12, num_layers=8, filter_size=4, first_cutoff=3.0,
                                    output_scale=0.5),
    "R_32px_default_depth": dict(resolution=32, z_dim=16, w_dim=16, n_mapping=2, channel_base=256,
                                 channel_max=16, conv_kernel=1, use_radial_filters=True, lrelu_upsampling=4),
}


@pytest.mark.parametrize("name", OTHER_CONFIGS)
def test_other_configurations_load_from_nvlabs_pickles(tmp_path, name):
    config = StyleGAN3Config(**OTHER_CONFIGS[name])
    widths = [d.out_channels for d in design_layers(config)[1][:-1]]
    gen = perturbed3(config)
    path = write_nvlabs_pickle(nvlabs_tree(gen, training_copy=perturbed3(config, seed=5)), tmp_path / f"{name}.pkl")
    loaded = load_generator(path)
    assert loaded.family == "stylegan3"
    assert loaded.config.to_dict() == {**config.to_dict(), "source_format": "nvlabs"}
    assert torch.equal(loaded.w_avg, gen.w_avg)
    same_images(gen, loaded)
    if name.startswith("T_64"):
        assert len(set(widths)) > 1  # a width change between layers is part of what is checked


def test_shape_changing_options_give_the_expected_layers():
    cfg = StyleGAN3Config(**OTHER_CONFIGS["T_64px_4layers"])
    _, designs = design_layers(cfg)
    assert [d.name for d in designs][-1] == "L4_64_3" and len(designs) == cfg.num_layers + 1
    img = perturbed3(cfg).synthesis(torch.zeros(2, cfg.num_ws, cfg.w_dim))
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()


# ------------------------------------------------------------------------------------ design formulas

def reference_design(cfg: StyleGAN3Config) -> list[dict]:
    """The README's design formulas, transcribed independently (plain Python floats, per layer)."""
    n, res = cfg.num_layers, cfg.resolution
    fc_last, ft_last = res / 2, res / 2 * cfg.last_stopband_rel
    values = []
    for i in range(n + 1):
        e = min(i / (n - cfg.num_critical), 1.0)
        cutoff = cfg.first_cutoff * (fc_last / cfg.first_cutoff) ** e
        stopband = cfg.first_stopband * (ft_last / cfg.first_stopband) ** e
        rate = 2 ** math.ceil(math.log2(min(2 * stopband, res)))
        size = res if i >= n - 1 else rate + 2 * cfg.margin_size
        width = cfg.img_channels if i == n else int(np.rint(min(cfg.channel_base / 2 / cutoff, cfg.channel_max)))
        values.append(dict(cutoff=cutoff, rate=rate, half=max(stopband, rate / 2) - cutoff, size=size, width=width))
    layers = []
    for i in range(n + 1):
        a, b = values[max(i - 1, 0)], values[i]
        torgb = i == n
        tmp = max(a["rate"], b["rate"]) * (1 if torgb else cfg.lrelu_upsampling)
        up, down = tmp // a["rate"], tmp // b["rate"]
        up_taps = cfg.filter_size * up if up > 1 and not torgb else 1
        down_taps = cfg.filter_size * down if down > 1 and not torgb else 1
        k = 1 if torgb else cfg.conv_kernel
        total = (b["size"] - 1) * down + 1 - (a["size"] + k - 1) * up + up_taps + down_taps - 2
        lo = math.floor((total + up) / 2)
        layers.append(dict(name=f"L{i}_{b['size']}_{b['width']}", in_cutoff=a["cutoff"], out_cutoff=b["cutoff"],
                           in_half_width=a["half"], out_half_width=b["half"], tmp_sampling_rate=tmp, up_factor=up,
                           down_factor=down, up_taps=up_taps, down_taps=down_taps, padding=(lo, total - lo) * 2,
                           in_channels=a["width"], out_channels=b["width"],
                           down_radial=cfg.use_radial_filters and i < n - cfg.num_critical))
    return layers


def reference_lowpass(taps: int, cutoff: float, width: float, fs: float, radial: bool) -> np.ndarray:
    """Kaiser-window FIR from its definition (numpy float64; J1 from torch.special)."""
    nyq = fs / 2
    atten = 2.285 * (taps - 1) * math.pi * (width / nyq) + 7.95
    beta = 0.1102 * (atten - 8.7) if atten > 50 else (
        0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21) if atten > 21 else 0.0)
    j = np.arange(taps)
    window = np.i0(beta * np.sqrt(1 - (2 * j / (taps - 1) - 1) ** 2)) / np.i0(beta)
    if not radial:
        m = j - (taps - 1) / 2
        h = (cutoff / nyq) * np.sinc((cutoff / nyq) * m) * window
        return h / h.sum()
    x = (j - (taps - 1) / 2) / fs
    r = np.hypot(x[:, None], x[None, :])
    f = torch.special.bessel_j1(torch.from_numpy(2 * math.pi * cutoff * r)).numpy() / (math.pi * r)
    f = f * np.outer(window, window)
    return f / f.sum()


@pytest.mark.parametrize("config", [StyleGAN3Config.stylegan3_t(1024), StyleGAN3Config.stylegan3_r(256),
                                    StyleGAN3Config.stylegan3_t(512, num_layers=10, num_critical=3),
                                    *[StyleGAN3Config(**c) for c in OTHER_CONFIGS.values()]],
                         ids=["T1024", "R256", "T512_10layers", *OTHER_CONFIGS])
def test_design_matches_an_independent_transcription(config):
    _, designs = design_layers(config)
    for ours, ref in zip(designs, reference_design(config), strict=True):
        for key, value in ref.items():
            got = getattr(ours, key)
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-12), (ours.name, key)
            else:
                assert got == value, (ours.name, key)
        if ours.is_torgb:
            continue
        up = lowpass_filter(ours.up_taps, ours.in_cutoff, 2 * ours.in_half_width, ours.tmp_sampling_rate)
        down = lowpass_filter(ours.down_taps, ours.out_cutoff, 2 * ours.out_half_width, ours.tmp_sampling_rate,
                              radial=ours.down_radial)
        expected_up = reference_lowpass(ours.up_taps, ours.in_cutoff, 2 * ours.in_half_width,
                                        ours.tmp_sampling_rate, False)
        expected_down = reference_lowpass(ours.down_taps, ours.out_cutoff, 2 * ours.out_half_width,
                                          ours.tmp_sampling_rate, ours.down_radial)
        assert np.abs(up.double().numpy() - expected_up).max() < 1e-7
        assert down.shape == expected_down.shape and np.abs(down.double().numpy() - expected_down).max() < 1e-7


def test_fixture_design_values_match_the_stored_ones(more_dir):
    """The loader checks them; here the table of the fixture README, independently."""
    gen = load_generator(more_dir / "sg3t_tiny.pkl")
    designs = gen.synthesis_network.layer_designs
    assert [d.name for d in designs] == ["L0_36_32", "L1_36_32", "L2_52_32", "L3_52_27", "L4_52_16", "L5_32_16",
                                         "L6_32_3"]
    assert designs[2].padding == (-6, -9, -6, -9) and designs[2].up_factor == 4 and designs[2].up_taps == 24
    assert designs[5].padding == (-11, -12, -11, -12)
    r_designs = load_generator(more_dir / "sg3r_tiny.pkl").synthesis_network.layer_designs
    assert [d.down_radial for d in r_designs] == [True] * 4 + [False] * 3
    assert r_designs[2].padding == (-2, -5, -2, -5)


# ------------------------------------------------------------------------------------ filtered lrelu

def naive_filtered_lrelu(x, bias, fu, fd, up, down, padding, gain, slope, clamp):
    """Zero insertion, padding, full convolutions, every down-th sample: the definition, in float64."""
    b, c, h, w = x.shape
    x = x + bias[None, :, None, None]
    z = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    x_lo, x_hi, y_lo, y_hi = padding
    z = torch.nn.functional.pad(z, [x_lo, x_hi, y_lo, y_hi])
    f2 = torch.outer(fu, fu) * up * up
    z = torch.nn.functional.conv2d(z.reshape(b * c, 1, *z.shape[2:]), f2.flip(0, 1)[None, None]).reshape(b, c, *[
        s - f2.shape[0] + 1 for s in z.shape[2:]])
    z = torch.nn.functional.leaky_relu(z, slope) * gain
    z = z.clamp(-clamp, clamp)
    fd2 = fd if fd.ndim == 2 else torch.outer(fd, fd)
    z = torch.nn.functional.conv2d(z.reshape(b * c, 1, *z.shape[2:]), fd2.flip(0, 1)[None, None])
    return z.reshape(b, c, *z.shape[2:])[:, :, ::down, ::down]


@pytest.mark.parametrize("up,padding,radial", [(2, (9, 8, 9, 8), False), (4, (-6, -9, -5, -10), False),
                                               (2, (11, 10, 11, 10), True), (2, (12, 3, 0, 1), False)])
def test_filtered_lrelu_matches_its_definition_and_gradient(up, padding, radial):
    gen = torch.Generator().manual_seed(up)
    x = torch.randn(2, 3, 14, 15, generator=gen, dtype=torch.float64) * 3
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    fu = lowpass_filter(6 * up, 3.0, 4.0, 16.0 * up).double()
    fd = lowpass_filter(12, 3.0, 4.0, 32.0, radial=radial).double()
    args = (fu, fd, up, 2, padding)
    expected = naive_filtered_lrelu(x, bias, *args, gain=math.sqrt(2), slope=0.2, clamp=2.5)
    ours = filtered_lrelu(x, bias, *args, gain=math.sqrt(2), slope=0.2, clamp=2.5)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=1e-10)
    assert (expected.abs() > 0).any()
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: filtered_lrelu(t, bias, *args, gain=math.sqrt(2), slope=0.2, clamp=2.5),
                                    (x[:1, :1].detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_ws_gradient_matches_finite_differences():
    cfg = StyleGAN3Config(resolution=16, z_dim=8, w_dim=8, n_mapping=1, channel_base=128, channel_max=8,
                          num_layers=3, margin_size=4)
    gen = perturbed3(cfg).double()
    ws = torch.randn(1, cfg.num_ws, cfg.w_dim, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: (gen.synthesis_network(w) * weights).sum(), (ws,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------ unsafe / malformed pickles

@pytest.fixture(scope="module")
def tiny_generator():
    return perturbed3(StyleGAN3Config(**OTHER_CONFIGS["R_16px_3layers_noclamp"]))


def test_record_running_a_command_refused(tmp_path, tiny_generator):
    marker = tmp_path / "pwned"
    tree = nvlabs_tree(tiny_generator)
    state_of(tree["G_ema"], "synthesis", "input")["bandwidth"] = RunsCommand(marker)
    path = write_nvlabs_pickle(tree, tmp_path / "evil_sg3.pkl")
    with pytest.raises(UnsafeFileError, match=r"evil_sg3\.pkl.*system"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("where", [(), ("synthesis",), ("synthesis", "input"), ("mapping", "fc0")])
def test_records_of_other_classes_refused(tmp_path, tiny_generator, where):
    tree = nvlabs_tree(tiny_generator)
    record = tree["G_ema"]
    for name in where:
        record = record.args[0]["state"]["_modules"][name]
    record.args[0]["class_name"] = "os.system" if not where else "Conv2dLayer"
    path = write_nvlabs_pickle(tree, tmp_path / "other_class.pkl")
    with pytest.raises(ModelFileError, match=r"other_class\.pkl.*(os\.system|Conv2dLayer)"):
        load_generator(path)


def test_modified_designs_refused(tmp_path, tiny_generator):
    def refused(edit, match):
        tree = nvlabs_tree(tiny_generator)
        edit(tree["G_ema"])
        path = write_nvlabs_pickle(tree, tmp_path / "modified.pkl")
        with pytest.raises(ModelFileError, match=match):
            load_generator(path)

    first = tiny_generator.synthesis_network.layer_designs[0].name
    refused(lambda g: state_of(g)["_init_kwargs"].update(activation="relu"), r"modified\.pkl.*'activation'")
    refused(lambda g: state_of(g, "synthesis", first).update(padding=[0, 0, 0, 0]), rf"{first}: padding")
    refused(lambda g: state_of(g, "synthesis", first)["_buffers"]["down_filter"].mul_(1.01), r"down_filter differs")
    refused(lambda g: state_of(g)["_init_kwargs"].update(margin_size=7), r"layers .* differ|size")
    refused(lambda g: state_of(g, "synthesis", first)["_parameters"].pop("weight"), r"missing tensor")
    refused(lambda g: state_of(g, "synthesis", first)["_parameters"]["bias"].fill_(float("nan")), r"NaN")


def test_stylegan3_tensors_only_refused_clearly(tmp_path, tiny_generator):
    """A bare ``G_ema.state_dict()`` of a StyleGAN3 has no design values: say so instead of guessing."""
    _, sd = nvlabs_stylegan3_state(tiny_generator)
    path = tmp_path / "bare_sg3.pt"
    torch.save(sd, path)
    with pytest.raises(ModelFileError, match=r"bare_sg3\.pt.*StyleGAN3"):
        load_generator(path)


# ------------------------------------------------------------------------------------ our format, convert

def test_safetensors_round_trip_is_exact(tmp_path, more_dir):
    from sgim_nodes.convert import convert

    gen = load_generator(more_dir / "sg3r_tiny.pkl")
    message = convert(more_dir / "sg3r_tiny.pkl", tmp_path / "sg3r.safetensors")
    assert "StyleGAN3 generator (nvlabs, 32 px, 8 W+ layers)" in message
    again = load_generator(tmp_path / "sg3r.safetensors")
    assert type(again) is StyleGAN3Generator and again.config == gen.config
    assert again.state_dict().keys() == gen.state_dict().keys()
    for key, value in gen.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    same_images(gen, again, atol=0)
    save_generator(again, tmp_path / "second.safetensors")  # and once more: still the same tensors
    third = load_generator(tmp_path / "second.safetensors")
    assert all(torch.equal(third.state_dict()[k], v) for k, v in gen.state_dict().items())


def test_transform_and_noise_mode_checked(tiny_generator):
    with pytest.raises(ParameterError, match="3x3"):
        tiny_generator.set_input_transform(torch.eye(2))
    with pytest.raises(ParameterError, match="finite"):
        tiny_generator.set_input_transform(torch.full((3, 3), float("inf")))
    with pytest.raises(ParameterError, match="noise_mode"):
        tiny_generator.synthesis(torch.zeros(1, tiny_generator.num_ws, tiny_generator.w_dim), noise_mode="x")
    with pytest.raises(ParameterError, match="unconditional"):
        tiny_generator.mapping(torch.zeros(1, tiny_generator.z_dim), c=torch.ones(1, 3))


# ------------------------------------------------------------------------------------ layer presets

def test_presets_follow_the_band_limits():
    for resolution, counts in ((1024, (4, 3, 9)), (512, (4, 3, 9)), (256, (4, 4, 8))):
        for config in (StyleGAN3Config.stylegan3_t(resolution), StyleGAN3Config.stylegan3_r(resolution)):
            inp, designs = design_layers(config)
            rows = [2 * inp.bandwidth] + [2 * d.out_cutoff for d in designs]
            groups = [preset_layers(p, config.num_ws, rows) for p in ("coarse", "middle", "fine")]
            assert tuple(map(len, groups)) == counts, (resolution, groups)
            assert sorted(sum(groups, [])) == list(range(config.num_ws))  # a partition, in order
    # StyleGAN2 unchanged: two rows per resolution
    assert preset_layers("coarse", 18) == [0, 1, 2, 3] and preset_layers("fine", 14) == list(range(8, 14))


def test_generator_reports_its_rows(more_dir):
    gen = load_generator(more_dir / "sg3t_tiny.pkl")
    assert len(gen.ws_resolutions) == gen.num_ws == 8
    assert gen.ws_resolutions[0] == 4.0 and gen.ws_resolutions[-1] == 32.0
    mask = LayerMask.preset("coarse", gen.num_ws, ws_resolutions=gen.ws_resolutions)
    assert (~mask.frozen).nonzero().flatten().tolist() == preset_layers("coarse", 8, gen.ws_resolutions)
    assert preset_layers("fine", 8, gen.ws_resolutions) == []  # 32 px: nothing above 45 px


# ------------------------------------------------------------------------------------ optimiser end to end

def test_optimize_latent_edits_a_stylegan3(tiny_generator):
    from sgim_nodes.clip import ClipModel, build_tiny_clip
    from sgim_nodes.optimize import optimize_latent, sample_source_ws

    clip = ClipModel(build_tiny_clip(embed_dim=24, seed=0), "sgim-tiny-clip-24", tokenizer=None)
    gen = tiny_generator
    source = sample_source_ws(gen, 2, seed=3)
    targets = torch.randn(2, clip.embed_dim, generator=torch.Generator().manual_seed(5))
    result = optimize_latent(gen, clip, targets, source, steps=15, lr=0.1, lambda_sim=0.0, layer_weights="middle")
    history = result.history["clip"]
    assert (history[-1] < history[0] - 0.02).all(), history[[0, -1]]
    middle = preset_layers("middle", gen.num_ws, gen.ws_resolutions)
    frozen = [i for i in range(gen.num_ws) if i not in middle]
    assert middle and frozen
    assert torch.equal(result.ws[:, frozen], source[:, frozen])  # presets use StyleGAN3's row groups
    assert not torch.equal(result.ws[:, middle], source[:, middle])
    assert result.images.shape == (2, 3, 16, 16)


def test_edit_command_with_a_stylegan3_pickle(tmp_path, tiny_generator, capsys):
    from PIL import Image

    from sgim_nodes.__main__ import main as cli
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config
    from sgim_nodes.latents import load_wplus

    pkl = write_nvlabs_pickle(nvlabs_tree(tiny_generator), tmp_path / "tiny_sg3.pkl")
    save_open_clip_state_dict(build_tiny_clip(embed_dim=32, seed=0), tmp_path / "clip.safetensors",
                              config=tiny_clip_config(32))
    out = tmp_path / "edit.png"
    code = cli(["edit", "--text", "a rainy night", "--generator", str(pkl), "--clip", str(tmp_path / "clip.safetensors"),
                "--out", str(out), "--steps", "10", "--seed", "3",
                "--device", "cpu", "--mask", "coarse"])
    assert code == 0
    printed = capsys.readouterr().out
    start, end = (float(v) for v in printed.split("(mean per edit): ")[1].split()[0:3:2])
    assert end < start
    assert np.asarray(Image.open(out)).shape == (16, 16, 3)
    ws, name, source = load_wplus(tmp_path / "edit_wplus.safetensors")
    assert name == "tiny_sg3" and ws.shape == (1, 5, 16)
    coarse = preset_layers("coarse", 5, tiny_generator.ws_resolutions)
    assert coarse == [0, 1]  # 16 px, 3 layers: input and L0 at band limit 2 (4 px), the rest at 8 (16 px)
    assert torch.equal(ws[:, 2:], source[:, 2:]) and not torch.equal(ws[:, :2], source[:, :2])


# ------------------------------------------------------------------------------------ conditional StyleGAN3

CONDITIONAL_T = dict(resolution=16, z_dim=12, w_dim=20, c_dim=4, n_mapping=2, channel_base=256, channel_max=16,
                     num_layers=3, num_critical=1, margin_size=4)


def onehot(classes, c_dim=4) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(classes), c_dim).float()


@pytest.fixture(scope="module")
def conditional_pickle(tmp_path_factory):
    """A conditional StyleGAN3-T snapshot whose mapping tensors (class embedding, layers, w_avg) are drawn
    as NVlabs initialises them, raw (before gains), and never passed through our code; and those raw tensors."""
    config = StyleGAN3Config(**CONDITIONAL_T)
    tree = nvlabs_tree(perturbed3(config))
    rng = torch.Generator().manual_seed(11)
    mapping = state_of(tree["G_ema"], "mapping")
    raw = {"lr_multiplier": config.mapping_lr_mul, "num_ws": config.num_ws}
    for name, (rows, cols), lr in [("embed", (20, 4), 1.0), ("fc0", (20, 12 + 20), 0.01), ("fc1", (20, 20), 0.01)]:
        params = mapping["_modules"][name].args[0]["state"]["_parameters"]
        params["weight"] = torch.randn(rows, cols, generator=rng) / lr  # NVlabs init: N(0, 1) / lr_multiplier
        params["bias"] = torch.randn(rows, generator=rng) * 0.3 / lr
        raw[name] = (params["weight"].clone(), params["bias"].clone())
    mapping["_buffers"]["w_avg"] = raw["w_avg"] = torch.randn(20, generator=rng) * 0.5
    path = write_nvlabs_pickle(tree, tmp_path_factory.mktemp("cond_sg3") / "cond_sg3.pkl")
    return path, raw


def nvlabs_conditional_mapping(raw: dict, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0, cutoff=None):
    """NVlabs stylegan3 MappingNetwork.forward, written out: FullyConnectedLayer = x @ (W * lr/sqrt(fan_in)).T
    + b * lr; embed c (lr 1, linear), normalise z and y separately, concatenate, lrelu layers (slope 0.2, gain
    sqrt 2), broadcast to num_ws rows, truncate the first ``cutoff`` rows toward w_avg."""
    def fully_connected(x, name, lr, lrelu):
        weight, bias = raw[name]
        x = x @ (weight * (lr / math.sqrt(weight.shape[1]))).t() + bias * lr
        return torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2) if lrelu else x

    def normalise(v):
        return v / torch.sqrt(v.square().mean(dim=1, keepdim=True) + 1e-8)

    x = torch.cat([normalise(z), normalise(fully_connected(c, "embed", 1.0, False))], dim=1)
    for name in ("fc0", "fc1"):
        x = fully_connected(x, name, raw["lr_multiplier"], True)
    ws = x[:, None, :].repeat(1, raw["num_ws"], 1)
    cutoff = raw["num_ws"] if cutoff is None else cutoff
    ws[:, :cutoff] = raw["w_avg"] + psi * (ws[:, :cutoff] - raw["w_avg"])
    return ws


def test_conditional_stylegan3_pickle_maps_as_nvlabs_does(conditional_pickle):
    path, raw = conditional_pickle
    gen = load_generator(path)
    assert gen.family == "stylegan3" and gen.c_dim == 4 and gen.config.c_dim == 4
    assert gen.config.label_mode == "embed" and gen.class_names is None
    assert torch.equal(gen.w_avg, raw["w_avg"])
    z = torch.randn(4, 12, generator=torch.Generator().manual_seed(2))
    c = onehot([0, 1, 2, 3])
    with torch.no_grad():
        torch.testing.assert_close(gen.mapping(z, c=c), nvlabs_conditional_mapping(raw, z, c), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gen.mapping(z, 0.6, 3, c=c), nvlabs_conditional_mapping(raw, z, c, 0.6, 3),
                                   atol=1e-5, rtol=1e-5)
        soft = torch.tensor([[0.5, 0.0, 0.5, 0.0]])  # soft labels and a batch of 1 broadcast
        torch.testing.assert_close(gen.mapping(z, c=soft), nvlabs_conditional_mapping(raw, z, soft.expand(4, -1)),
                                   atol=1e-5, rtol=1e-5)
        same_z = z[:1].expand(4, -1)
        per_class = gen.mapping(same_z, c=c)[:, 0]
        gaps = torch.cdist(per_class, per_class)[~torch.eye(4, dtype=torch.bool)]
        assert gaps.min() > 0.1 * per_class.norm(dim=1).mean(), gaps  # each class its own w for the same z
        images = gen(same_z, truncation_psi=0.7, c=c)
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()
    assert (images[1:] - images[:1]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_conditional_stylegan3_label_errors(conditional_pickle, tiny_generator):
    from sgim_nodes.optimize import sample_source_ws

    gen = load_generator(conditional_pickle[0])
    z = torch.zeros(2, 12)
    with pytest.raises(ParameterError, match=r"c: generator 'cond_sg3' is conditional \(4 classes\)"):
        gen.mapping(z)
    with pytest.raises(ParameterError, match=r"shape \[2, 4\]"):
        gen.mapping(z, c=torch.zeros(2, 5))
    with pytest.raises(ParameterError, match="NaN"):
        gen.mapping(z, c=torch.full((2, 4), float("nan")))
    with pytest.raises(ParameterError, match=r"--class: class 4 is out of range: generator 'cond_sg3' has 4 "
                                             r"classes \(0\.\.3\)"):
        sample_source_ws(gen, 1, seed=0, labels=4, labels_name="--class")
    with pytest.raises(ParameterError, match=r"class_index: generator 'stylegan3' is unconditional"):
        sample_source_ws(tiny_generator, 1, seed=0, labels=2, labels_name="class_index")
    with pytest.raises(ParameterError, match=r"c: generator 'stylegan3' is unconditional"):
        tiny_generator.mapping(torch.zeros(1, tiny_generator.z_dim), c=onehot([1]))
    drawn = sample_source_ws(gen, 3, seed=8)  # no class chosen: one random class per image from the seed
    rng = torch.Generator().manual_seed(8)
    z = torch.randn(3, 12, generator=rng)
    classes = torch.randint(4, (3,), generator=rng)
    with torch.no_grad():
        assert torch.equal(drawn, gen.mapping(z, truncation_psi=0.7, c=onehot(classes)))


def test_conditional_stylegan3_files_damaged_in_the_class_embedding_refused(tmp_path, tiny_generator):
    conditional = perturbed3(StyleGAN3Config(**CONDITIONAL_T))
    tree = nvlabs_tree(conditional)
    del state_of(tree["G_ema"], "mapping")["_modules"]["embed"]
    with pytest.raises(ModelFileError, match=r"no_embed\.pkl: a conditional StyleGAN3 generator \(c_dim=4\) "
                                             r"without its class embedding 'mapping\.embed'"):
        load_generator(write_nvlabs_pickle(tree, tmp_path / "no_embed.pkl"))
    tree = nvlabs_tree(conditional)
    state_of(tree["G_ema"])["c_dim"] = 0
    with pytest.raises(ModelFileError, match=r"c_dim 0\) with a class embedding"):
        load_generator(write_nvlabs_pickle(tree, tmp_path / "stray_embed.pkl"))
    tree = nvlabs_tree(conditional)
    params = state_of(tree["G_ema"], "mapping", "embed")["_parameters"]
    params["weight"] = params["weight"][:, :3].clone()
    with pytest.raises(ModelFileError, match=r"narrow_embed\.pkl: tensor 'mapping\.embed\.weight' has shape "
                                             r"\[20, 3\], expected \[20, 4\]"):
        load_generator(write_nvlabs_pickle(tree, tmp_path / "narrow_embed.pkl"))
    tree = nvlabs_tree(conditional)  # a mapping that reads z alone, as an unconditional one would
    params = state_of(tree["G_ema"], "mapping", "fc0")["_parameters"]
    params["weight"] = params["weight"][:, :12].clone()
    with pytest.raises(ModelFileError, match=r"'mapping\.fc0\.weight' reads 12 values; z_dim 12 and the 20-wide "
                                             r"class embedding need 32"):
        load_generator(write_nvlabs_pickle(tree, tmp_path / "no_room_for_labels.pkl"))


def test_conditional_stylegan3_safetensors_round_trip_with_class_names(tmp_path, conditional_pickle):
    from sgim_nodes.convert import convert
    from sgim_nodes.optimize import sample_source_ws

    gen = load_generator(conditional_pickle[0])
    names = tmp_path / "styles.txt"
    names.write_text("ukiyo-e\ncubism\nimpressionism\nbaroque\n", encoding="utf-8")
    message = convert(conditional_pickle[0], tmp_path / "cond_sg3.safetensors", class_names=names)
    assert "StyleGAN3 generator" in message and "4 classes" in message
    back = load_generator(tmp_path / "cond_sg3.safetensors")
    assert type(back) is StyleGAN3Generator and back.config == gen.config and back.c_dim == 4
    assert back.class_names == ["ukiyo-e", "cubism", "impressionism", "baroque"]
    assert back.state_dict().keys() == gen.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in gen.state_dict().items())
    z = torch.randn(3, 12, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(back(z, truncation_psi=0.5, c=onehot([0, 2, 3])), gen(z, truncation_psi=0.5,
                                                                                 c=onehot([0, 2, 3])))
    by_name = sample_source_ws(back, 2, seed=4, labels="impressionism")
    assert torch.equal(by_name, sample_source_ws(gen, 2, seed=4, labels=2))
    assert not torch.equal(by_name, sample_source_ws(gen, 2, seed=4, labels=1))
    save_generator(back, tmp_path / "again.safetensors")  # names and tensors survive a second save
    again = load_generator(tmp_path / "again.safetensors")
    assert again.class_names == back.class_names
    assert all(torch.equal(again.state_dict()[k], v) for k, v in gen.state_dict().items())


def test_edit_command_with_a_class_of_a_conditional_stylegan3(tmp_path, conditional_pickle, capsys):
    from sgim_nodes.__main__ import main as cli
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config
    from sgim_nodes.latents import load_wplus
    from sgim_nodes.optimize import sample_source_ws

    save_open_clip_state_dict(build_tiny_clip(embed_dim=32, seed=0), tmp_path / "clip.safetensors",
                              config=tiny_clip_config(32))
    args = ["edit", "--text", "a rainy night", "--generator", str(conditional_pickle[0]), "--clip",
            str(tmp_path / "clip.safetensors"), "--out", str(tmp_path / "edit.png"), "--steps", "6", "--seed", "3",
            "--device", "cpu"]
    assert cli(args + ["--class", "2"]) == 0
    ws, name, source = load_wplus(tmp_path / "edit_wplus.safetensors")
    gen = load_generator(conditional_pickle[0])
    assert name == "cond_sg3" and ws.shape == (1, gen.num_ws, 20)
    assert torch.equal(source, sample_source_ws(gen, 1, seed=3, truncation=0.7, labels=2))
    assert not torch.equal(source, sample_source_ws(gen, 1, seed=3, truncation=0.7, labels=1))
    assert not torch.equal(ws, source)
    capsys.readouterr()
    assert cli(args + ["--class", "7"]) == 1
    error = capsys.readouterr().err
    assert "error: --class: class 7 is out of range: generator 'cond_sg3' has 4 classes (0..3)" in error


# ------------------------------------------------------------------------------------ against NVlabs' own code

@pytest.fixture
def nvlabs_generator_class():
    """NVlabs' StyleGAN3 Generator from ``NVLABS_STYLEGAN3_DIR`` (never part of this repo); its modules are
    removed from ``sys.modules`` afterwards (other tests check that no ``torch_utils`` was ever imported)."""
    import sys
    import types

    folder = os.environ.get("NVLABS_STYLEGAN3_DIR")
    if not folder or not (Path(folder) / "training" / "networks_stylegan3.py").is_file():
        pytest.skip("NVLABS_STYLEGAN3_DIR not set to a stylegan3 checkout")
    modules_before, path_before = set(sys.modules), list(sys.path)
    sys.path.insert(0, folder)
    try:
        import pkg_resources  # noqa: F401  (its conv2d_gradfix imports parse_version from here)
    except ImportError:
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    try:
        from training.networks_stylegan3 import Generator

        yield Generator
    finally:
        # Only the checkout's own modules (and a pkg_resources stand-in): the libraries they imported stay, as
        # an extension module (numpy.fft's) cannot be loaded twice in one process.
        checkout = {entry.stem for entry in Path(folder).iterdir()} | {"pkg_resources"}
        for name in set(sys.modules) - modules_before:
            if name.split(".")[0] in checkout:
                del sys.modules[name]
        sys.path[:] = path_before


@pytest.mark.parametrize("name", OTHER_CONFIGS)
def test_other_configurations_match_nvlabs_code(name, nvlabs_generator_class):
    """The same weights through NVlabs' networks_stylegan3.py (reference ops on CPU) give the same ws
    and images, for configurations other than the fixtures'."""
    gen = perturbed3(StyleGAN3Config(**OTHER_CONFIGS[name]))
    init_kwargs, state = nvlabs_stylegan3_state(gen)
    theirs = nvlabs_generator_class(**init_kwargs).eval()
    theirs.load_state_dict(state)
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ws = theirs.mapping(z, None, truncation_psi=0.6)
        torch.testing.assert_close(gen.mapping(z, truncation_psi=0.6), ws, **TOL)
        torch.testing.assert_close(gen.synthesis(ws), theirs.synthesis(ws, force_fp32=True), **TOL)


def test_conditional_stylegan3_matches_nvlabs_code(nvlabs_generator_class):
    """A conditional StyleGAN3-T's weights through NVlabs' own mapping (class embedding) and synthesis."""
    gen = perturbed3(StyleGAN3Config(**CONDITIONAL_T))
    init_kwargs, state = nvlabs_stylegan3_state(gen)
    theirs = nvlabs_generator_class(**init_kwargs).eval()
    theirs.load_state_dict(state)
    z = torch.randn(4, gen.z_dim, generator=torch.Generator().manual_seed(4))
    c = onehot([3, 0, 1, 2])
    with torch.no_grad():
        ws = theirs.mapping(z, c, truncation_psi=0.6, truncation_cutoff=2)
        torch.testing.assert_close(gen.mapping(z, truncation_psi=0.6, truncation_cutoff=2, c=c), ws, **TOL)
        torch.testing.assert_close(gen.synthesis(ws), theirs.synthesis(ws, force_fp32=True), **TOL)
