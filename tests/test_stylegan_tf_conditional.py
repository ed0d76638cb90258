"""Conditional generators and TensorFlow StyleGAN2 pickles: the reference fixtures reproduced, other
shapes written with the test-side TF writer, refusals, the safetensors round trip and the label rules."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sgim_nodes.errors import ModelFileError, ParameterError, UnsafeFileError
from sgim_nodes.stylegan import Generator, GeneratorConfig, load_generator, save_generator
from sgim_nodes.stylegan.labels import class_labels
from test_stylegan import perturbed
from tf_pickle_writer import (NetworkRecord, discriminator_record, generator_records, network_state,
                              static_kwargs, write_tf_pickle)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = {  # name -> (c_dim, label mode, source format)
    "ada_cond_tiny": (5, "embed", "nvlabs"),
    "tf_sg2_tiny": (0, None, "tensorflow"),
    "tf_sg2ada_cond_tiny": (5, "embed", "tensorflow-ada"),
    "tf_sg2_labelconcat_tiny": (5, "concat", "tensorflow"),
}
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def more_dir(fixtures_dir):
    return fixtures_dir / "stylegan_more"


@pytest.fixture(scope="module")
def sg2_dir(fixtures_dir):
    return fixtures_dir / "stylegan2"


def expected(more_dir, name):
    return load_file(str(more_dir / f"{name}_expected.safetensors"))


def assert_max_err(actual, wanted, what, atol=1e-4):
    err = (actual.float() - wanted.float()).abs().max().item()
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


# ------------------------------------------------------------------------------------ reference fixtures

@pytest.mark.parametrize("modulation", ["activation", "weight"])
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_reproduced(more_dir, name, modulation):
    e = expected(more_dir, name)
    gen = load_generator(more_dir / f"{name}.pkl", modulation=modulation)
    c_dim, mode, source = FIXTURES[name]
    assert (gen.resolution, gen.num_ws, gen.w_dim, gen.z_dim, gen.c_dim) == (32, 8, 64, 64, c_dim)
    assert (gen.config.label_mode, gen.config.source_format) == (mode, source)
    assert gen.config.channels == {4: 32, 8: 32, 16: 32, 32: 16}
    c = e.get("c")
    if c_dim:  # the stored labels are the one-hot classes the README lists
        assert torch.equal(c, F.one_hot(c.argmax(1), c_dim).float())
    with torch.no_grad():
        ws = gen.mapping(e["z"], c=c)
        assert_max_err(ws, e["ws"], "ws")
        assert_max_err(gen.synthesis(ws, noise_mode="const"), e["img"], "img")
        assert_max_err(gen(e["z"], truncation_psi=0.5, c=c), e["img_psi05"], "img_psi05")
        assert_max_err(gen.synthesis(e["ws_random"]), e["img_ws_random"], "img_ws_random")
        if c_dim:
            assert_max_err(gen.mapping(e["z"][:2], c=e["c_soft"]), e["ws_c_soft"], "ws_c_soft")
    assert torch.equal(gen.w_avg, e["w_avg"])


def test_truncation_uses_the_single_global_w_avg(more_dir):
    gen = load_generator(more_dir / "tf_sg2ada_cond_tiny.pkl")
    e = expected(more_dir, "tf_sg2ada_cond_tiny")
    with torch.no_grad():
        full = gen.mapping(e["z"], c=e["c"])
        half = gen.mapping(e["z"], truncation_psi=0.5, c=e["c"])
        cut = gen.mapping(e["z"], truncation_psi=0.5, truncation_cutoff=3, c=e["c"])
    torch.testing.assert_close(half, gen.w_avg + 0.5 * (full - gen.w_avg))
    assert torch.equal(cut[:, :3], half[:, :3]) and torch.equal(cut[:, 3:], full[:, 3:])


def test_estimated_w_avg_of_a_conditional_generator_is_the_class_averaged_mean(more_dir):
    """The fixtures' w_avg is the mean over 4096 seeded z with random one-hot labels (other draws than ours)."""
    gen = load_generator(more_dir / "ada_cond_tiny.pkl")
    estimate = gen.estimate_w_avg(4096, seed=0)
    with torch.no_grad():
        z = torch.randn(4096, gen.z_dim, generator=torch.Generator().manual_seed(5))
        spread = gen.mapping(z, c=F.one_hot(torch.arange(4096) % 5, 5).float())[:, 0].std(0)
        class0 = gen.mapping(z[:512], c=F.one_hot(torch.zeros(512, dtype=torch.long), 5).float())[:, 0].mean(0)
    # within a few standard errors of the stored mean, and farther from a single class's mean
    assert ((estimate - gen.w_avg).abs() / spread).max() < 0.25
    assert (estimate - gen.w_avg).norm() < 0.5 * (class0 - gen.w_avg).norm()


# ------------------------------------------------------------------------------------ label rules

def test_mapping_label_errors(more_dir, sg2_dir):
    cond = load_generator(more_dir / "tf_sg2_labelconcat_tiny.pkl")
    plain = load_generator(sg2_dir / "nvlabs_tiny.pkl")
    z = torch.randn(2, 64)
    with pytest.raises(ParameterError, match=r"c: generator 'nvlabs_tiny' is unconditional") as info:
        plain.mapping(z, c=torch.eye(5)[:2])
    assert info.value.parameter == "c"
    with pytest.raises(ParameterError, match=r"conditional \(5 classes\).*labels \[batch, 5\]"):
        cond.mapping(z)
    with pytest.raises(ParameterError, match=r"shape \[2, 5\].*got \[2, 4\]"):
        cond.mapping(z, c=torch.zeros(2, 4))
    with pytest.raises(ParameterError, match="NaN"):
        cond.mapping(z, c=torch.full((2, 5), float("nan")))
    # an empty label tensor is what NVlabs code passes to unconditional generators: accepted
    assert torch.equal(plain.mapping(z, c=torch.zeros(2, 0)), plain.mapping(z))
    # a batch of one label vector is broadcast
    one = cond.mapping(z, c=torch.eye(5)[3:4])
    assert torch.equal(one, cond.mapping(z, c=torch.eye(5)[[3, 3]]))


def test_class_labels_rules(more_dir, sg2_dir):
    cond = load_generator(more_dir / "ada_cond_tiny.pkl")
    plain = load_generator(sg2_dir / "nvlabs_tiny.pkl")
    assert class_labels(plain, -1, 3) is None and class_labels(plain, None, 3) is None
    with pytest.raises(ParameterError, match=r"--class: generator 'nvlabs_tiny' is unconditional"):
        class_labels(plain, 2, 1, name="--class")
    assert torch.equal(class_labels(cond, 3, 2), torch.eye(5)[[3, 3]])
    assert torch.equal(class_labels(cond, "4", 1), torch.eye(5)[[4]])
    assert torch.equal(class_labels(cond, [0, 2], 2), torch.eye(5)[[0, 2]])
    soft = torch.randn(5)
    assert torch.equal(class_labels(cond, soft, 2), soft[None].expand(2, 5))
    for bad in (5, -2, "7"):
        with pytest.raises(ParameterError, match=r"my input: class -?\d+ is out of range: .* has 5 classes \(0\.\.4\)"):
            class_labels(cond, bad, 1, name="my input")
    with pytest.raises(ParameterError, match="carries no class names, so give the class as an index"):
        class_labels(cond, "cubism", 1)
    cond.class_names = ["a", "b", "cubism", "d", "e"]
    assert torch.equal(class_labels(cond, "cubism", 1), torch.eye(5)[[2]])
    drawn = class_labels(cond, -1, 64, rng=torch.Generator().manual_seed(0))
    assert torch.equal(drawn.sum(1), torch.ones(64)) and len(set(drawn.argmax(1).tolist())) == 5  # random classes
    assert torch.equal(drawn, class_labels(cond, None, 64, rng=torch.Generator().manual_seed(0)))


def test_sample_source_ws_with_a_class(more_dir):
    from sgim_nodes.optimize import sample_source_ws

    gen = load_generator(more_dir / "tf_sg2_labelconcat_tiny.pkl")
    ws = sample_source_ws(gen, 2, seed=7, truncation=0.7, labels=3)
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(ws, gen.mapping(z, truncation_psi=0.7, c=torch.eye(5)[[3, 3]]))
        assert not torch.allclose(ws, gen.mapping(z, truncation_psi=0.7, c=torch.eye(5)[[1, 1]]), atol=1e-3)
    # no class: one random class per image, the same for the same seed
    assert torch.equal(sample_source_ws(gen, 2, seed=7), sample_source_ws(gen, 2, seed=7))
    with pytest.raises(ParameterError, match=r"--class: class 9 is out of range"):
        sample_source_ws(gen, 1, seed=0, labels=9, labels_name="--class")


# ------------------------------------------------------------------------------------ our safetensors

@pytest.mark.parametrize("name", FIXTURES)
def test_safetensors_round_trip_is_exact(tmp_path, more_dir, name):
    gen = load_generator(more_dir / f"{name}.pkl")
    path = tmp_path / f"{name}.safetensors"
    save_generator(gen, path)
    back = load_generator(path)
    assert back.config == gen.config and back.c_dim == gen.c_dim
    meta_config = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()["config"])
    assert (meta_config["c_dim"], meta_config["label_mode"]) == (gen.c_dim, gen.config.label_mode)
    for key, value in gen.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    e = expected(more_dir, name)
    with torch.no_grad():
        assert torch.equal(back(e["z"], truncation_psi=0.5, c=e.get("c")), gen(e["z"], truncation_psi=0.5, c=e.get("c")))


def test_class_names_stored_by_convert(tmp_path, more_dir):
    from sgim_nodes.convert import main as convert_main

    names = tmp_path / "names.txt"
    names.write_text("baroque\ncubism\n\nimpressionism\nukiyo-e\nrealism\n")
    out = tmp_path / "cond.safetensors"
    assert convert_main([str(more_dir / "tf_sg2_labelconcat_tiny.pkl"), str(out), "--class-names", str(names)]) == 0
    gen = load_generator(out)
    assert gen.class_names == ["baroque", "cubism", "impressionism", "ukiyo-e", "realism"]
    assert torch.equal(class_labels(gen, "ukiyo-e", 1), torch.eye(5)[[3]])
    names.write_text("a\nb\n")
    with pytest.raises(ParameterError, match=r"--class-names: got 2 class names for a generator with 5 classes"):
        convert_main([str(more_dir / "tf_sg2_labelconcat_tiny.pkl"), str(tmp_path / "x.safetensors"),
                      "--class-names", str(names)])
    assert load_generator(more_dir / "tf_sg2_labelconcat_tiny.pkl").class_names is None  # pickles carry none


@pytest.mark.parametrize("name", ["ada_cond_tiny", "tf_sg2_tiny", "tf_sg2ada_cond_tiny"])
def test_convert_every_new_format(tmp_path, more_dir, name):
    from sgim_nodes.convert import convert

    out = tmp_path / "out.safetensors"
    message = convert(more_dir / f"{name}.pkl", out)
    assert "StyleGAN2 generator" in message and FIXTURES[name][2] in message
    assert ("5 classes" in message) == bool(FIXTURES[name][0])
    e = expected(more_dir, name)
    with torch.no_grad():
        assert_max_err(load_generator(out)(e["z"], c=e.get("c")), e["img"], "img after convert")


# ------------------------------------------------------------------------------------ other TF shapes

OTHER_TF = {
    # original layout, 64 px, mapping depth 3 with the original default hidden width (512, kwarg left out),
    # LabelConcat with 3 classes, a width change between every block
    "orig_64px_concat3": (dict(resolution=64, z_dim=24, w_dim=32, n_mapping=3, mapping_hidden=512,
                               channels={4: 48, 8: 40, 16: 24, 32: 16, 64: 8}, c_dim=3, label_mode="concat"),
                          False, {"mapping_fmaps": None}),
    # ADA layout, 16 px, LabelEmbed 7 classes into 20 values, hidden 40, conv clamp
    "ada_16px_embed7": (dict(resolution=16, z_dim=16, w_dim=24, n_mapping=2, mapping_hidden=40,
                             channels={4: 32, 8: 24, 16: 12}, c_dim=7, label_mode="embed", label_features=20,
                             conv_clamp=256.0), True, {}),
    # unconditional original layout, 8 px, one mapping layer
    "orig_8px_unconditional": (dict(resolution=8, z_dim=20, w_dim=28, n_mapping=1,
                                    channels={4: 12, 8: 6}), False, {}),
}


def _other(name, seed=0):
    config_kwargs, ada, kwarg_overrides = OTHER_TF[name]
    gen = perturbed(GeneratorConfig(**config_kwargs), seed=seed)
    with torch.no_grad():  # the perturbed helper leaves the label weights at init; move them too
        for pname, tensor in gen.named_parameters():
            if "label" in pname:
                tensor.add_(torch.randn_like(tensor) * 0.3)
    return gen, ada, static_kwargs(gen, ada, **kwarg_overrides)


def _same_images(gen: Generator, loaded: Generator, atol=1e-5):
    z = torch.randn(3, gen.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.softmax(torch.randn(3, gen.c_dim), 1) if gen.c_dim else None
    with torch.no_grad():
        for psi in (1.0, 0.6):
            torch.testing.assert_close(loaded(z, truncation_psi=psi, c=c), gen(z, truncation_psi=psi, c=c),
                                       atol=atol, rtol=1e-5)
        ws = torch.randn(2, gen.num_ws, gen.w_dim, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(loaded.synthesis(ws), gen.synthesis(ws), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("name", OTHER_TF)
def test_other_tf_shapes_load_to_the_same_generator(tmp_path, name):
    gen, ada, kwargs = _other(name)
    training_copy, _, _ = _other(name, seed=1)  # G: different weights; only Gs may be used
    path = write_tf_pickle(tmp_path / f"{name}.pkl", (generator_records(training_copy, ada, kwargs, name="G"),
                                                       discriminator_record("D_main" if ada else "D_stylegan2"),
                                                       generator_records(gen, ada, kwargs)))
    loaded = load_generator(path, modulation="weight")
    assert loaded.config == GeneratorConfig(**{**gen.config.to_dict(), "source_format": loaded.config.source_format})
    assert loaded.config.source_format == ("tensorflow-ada" if ada else "tensorflow")
    assert torch.equal(loaded.w_avg, gen.w_avg)
    _same_images(gen, loaded)


def test_tf_defaults_of_the_two_code_bases(tmp_path):
    """mapping_fmaps left out: 512 in the original code, dlatent_size in ADA; the variables must agree."""
    gen, _, kwargs = _other("ada_16px_embed7")  # hidden 40
    kwargs.pop("mapping_fmaps")
    path = write_tf_pickle(tmp_path / "orig.pkl", generator_records(gen, False, kwargs))
    with pytest.raises(ModelFileError, match=r"orig\.pkl: static_kwargs say mapping_fmaps=512 but the variables have 40"):
        load_generator(path)
    path = write_tf_pickle(tmp_path / "ada.pkl", generator_records(gen, True, kwargs))
    with pytest.raises(ModelFileError, match=r"ada\.pkl: static_kwargs say mapping_fmaps=24 but the variables have 40"):
        load_generator(path)
    lone = write_tf_pickle(tmp_path / "lone_gs.pkl", generator_records(gen, True, {**kwargs, "mapping_fmaps": 40}))
    _same_images(gen, load_generator(lone))  # a lone pickled Gs (no tuple) loads too


# ------------------------------------------------------------------------------------ refusals

def _gs_with(gen, **changes):
    record = generator_records(gen)
    record.state.update(changes)
    return record


@pytest.mark.parametrize("func, expected", [
    ("G_style", r"style1\.pkl: a TensorFlow StyleGAN \(version 1\) pickle \(build function 'G_style'\)"),
    ("G_paper", r"style1\.pkl: a TensorFlow Progressive GAN \(ProGAN\) pickle"),
    ("G_something", r"style1\.pkl: a TensorFlow network built by 'G_something', not a StyleGAN2 generator"),
])
def test_other_tf_generators_refused_by_name(tmp_path, func, expected):
    gen, _, _ = _other("orig_8px_unconditional")
    path = write_tf_pickle(tmp_path / "style1.pkl", (discriminator_record(), discriminator_record(),
                                                     _gs_with(gen, build_func_name=func)))
    with pytest.raises(ModelFileError, match=expected):
        load_generator(path)


def test_progan_network_class_refused_by_name(tmp_path):
    state = network_state("Gs", "G_paper", {"resolution": 8}, [("4x4/Dense/weight", np.zeros((2, 2), np.float32))])
    path = write_tf_pickle(tmp_path / "karras2018.pkl", (NetworkRecord(state, "tfutil"),) * 3)
    with pytest.raises(ModelFileError, match=r"karras2018\.pkl: a TensorFlow Progressive GAN"):
        load_generator(path)


def test_tf_variants_refused(tmp_path):
    gen, _, kwargs = _other("orig_8px_unconditional")
    cases = {
        "unknown_kwarg.pkl": ({**kwargs, "spatial_tokens": 4}, r"unknown TensorFlow generator kwargs \['spatial_tokens'\]"),
        "resnet_g.pkl": ({**kwargs, "architecture": "resnet"}, r"architecture='resnet'; only 'skip'"),
        "wrong_size.pkl": ({**kwargs, "resolution": 16}, r"static_kwargs say resolution=16 but the variables have 8"),
    }
    for name, (bad_kwargs, expected_message) in cases.items():
        path = write_tf_pickle(tmp_path / name, generator_records(gen, False, bad_kwargs))
        with pytest.raises(ModelFileError, match=re.escape(name) + ".*" + expected_message):
            load_generator(path)
    revised = generator_records(gen)
    revised.state["components"]["synthesis"].state["build_func_name"] = "G_synthesis_stylegan_revised"
    with pytest.raises(ModelFileError, match=r"revised StyleGAN synthesis of StyleGAN2 configs A-D"):
        load_generator(write_tf_pickle(tmp_path / "revised.pkl", revised))
    missing = generator_records(gen)
    variables = missing.state["components"]["synthesis"].state["variables"]
    variables[:] = [v for v in variables if v[0] != "8x8/Conv1/mod_bias"]
    with pytest.raises(ModelFileError, match=r"missing TensorFlow variable 'synthesis/8x8/Conv1/mod_bias'"):
        load_generator(write_tf_pickle(tmp_path / "missing.pkl", missing))
    with pytest.raises(ModelFileError, match=r"d_only\.pkl: the last network .* is a discriminator \('D_main'\)"):
        load_generator(write_tf_pickle(tmp_path / "d_only.pkl", discriminator_record("D_main")))


# ------------------------------------------------------------------------------------ security

class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_tf_pickle_naming_os_system_refused_before_anything_runs(tmp_path):
    gen, _, _ = _other("orig_8px_unconditional")
    marker = tmp_path / "pwned"
    record = generator_records(gen)
    record.state["variables"].append(("lod", _RunsCommand(marker)))
    path = write_tf_pickle(tmp_path / "evil_tf.pkl", (discriminator_record(), discriminator_record(), record))
    with pytest.raises(UnsafeFileError, match=r"evil_tf\.pkl: refused to load '(posix|os)\.system'"):
        load_generator(path)
    assert not marker.exists()


def test_tf_network_class_replaced_by_os_system_refused(tmp_path):
    """The Network global itself swapped for os.system (protocol 2 spells globals as text lines, so the
    swap keeps the stream valid); refused when resolved, before any record is built."""
    gen, _, _ = _other("orig_8px_unconditional")
    data = write_tf_pickle(tmp_path / "good.pkl", generator_records(gen), protocol=2).read_bytes()
    evil = data.replace(b"cdnnlib.tflib.network\nNetwork\n", b"cos\nsystem\n")
    assert evil != data
    bad = tmp_path / "class_is_os_system.pkl"
    bad.write_bytes(evil)
    with pytest.raises(UnsafeFileError, match=r"class_is_os_system\.pkl: refused to load 'os\.system'"):
        load_generator(bad)


def test_build_module_src_is_never_run(tmp_path):
    gen, _, _ = _other("orig_8px_unconditional")
    marker = tmp_path / "ran"
    record = generator_records(gen)
    record.state["build_module_src"] = f"import os\nos.system('touch {marker}')\ndef G_main(): pass\n"
    loaded = load_generator(write_tf_pickle(tmp_path / "with_source.pkl", record))
    assert not marker.exists()
    _same_images(gen, loaded)
    assert "dnnlib" not in sys.modules and "tfutil" not in sys.modules


class _ReconstructsAnotherType:
    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.dtype, (0,), b"b")


def test_numpy_reconstruct_builds_plain_arrays_only(tmp_path):
    """``_reconstruct`` is allowed for ndarrays; asked for another (allowed) type it refuses."""
    gen, _, _ = _other("orig_8px_unconditional")
    record = generator_records(gen)
    record.state["variables"].append(("extra", _ReconstructsAnotherType()))
    path = write_tf_pickle(tmp_path / "subtype.pkl", record)
    with pytest.raises(ModelFileError, match=r"subtype\.pkl: not a readable pickle.*plain numpy arrays only"):
        load_generator(path)


def test_reconstruct_wrapper_refuses_other_types():
    from sgim_nodes.safe_pickle import numpy_array_globals

    reconstruct = numpy_array_globals()[("numpy.core.multiarray", "_reconstruct")]
    assert isinstance(reconstruct(np.ndarray, (0,), b"b"), np.ndarray)
    with pytest.raises(TypeError, match="plain numpy arrays only"):
        reconstruct(np.ma.MaskedArray, (0,), b"b")




# ------------------------------------------------------------------------------------ editing with a class

@pytest.fixture(scope="module")
def tiny_clip():
    from sgim_nodes.clip import ClipModel, build_tiny_clip

    return ClipModel(build_tiny_clip(embed_dim=24, seed=0), "sgim-tiny-clip-24", tokenizer=None)


def test_library_edit_of_a_conditional_generator_with_a_chosen_class(more_dir, tiny_clip):
    from sgim_nodes.optimize import optimize_latent, sample_source_ws

    gen = load_generator(more_dir / "tf_sg2ada_cond_tiny.pkl")
    source = sample_source_ws(gen, 1, seed=3, truncation=0.7, labels=2)
    targets = torch.randn(1, tiny_clip.embed_dim, generator=torch.Generator().manual_seed(5))

    def cosine(ws):
        with torch.no_grad():
            return F.cosine_similarity(tiny_clip.image_features(gen.synthesis(ws)), targets).item()

    result = optimize_latent(gen, tiny_clip, targets, source, steps=25, lr=0.1, lambda_sim=0.0)
    assert torch.equal(result.source_ws, source)
    assert cosine(result.ws) > cosine(source) + 0.05
    # a random source from the seed works too (one random class per image)
    drawn = optimize_latent(gen, tiny_clip, targets, "random", steps=2, seed=3, return_images=False)
    assert torch.isfinite(drawn.ws).all()


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, more_dir):
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config

    root = tmp_path_factory.mktemp("cond_models")
    save_open_clip_state_dict(build_tiny_clip(embed_dim=32, seed=0), root / "tiny_clip.safetensors",
                              config=tiny_clip_config(32))
    return {"clip": root / "tiny_clip.safetensors", "generator": more_dir / "tf_sg2_labelconcat_tiny.pkl",
            "unconditional": more_dir / "tf_sg2_tiny.pkl"}


def _edit(cli_models, tmp_path, *extra, generator="generator"):
    from sgim_nodes.__main__ import main as cli

    return cli(["edit", "--text", "an impressionist painting", "--generator", str(cli_models[generator]),
                "--clip", str(cli_models["clip"]), "--out",
                str(tmp_path / "edit.png"), "--steps", "6", "--seed", "5", "--device", "cpu", *extra])


def test_cli_edit_with_a_class(cli_models, tmp_path, capsys):
    from sgim_nodes.latents import load_wplus
    from sgim_nodes.optimize import sample_source_ws

    assert _edit(cli_models, tmp_path, "--class", "4") == 0
    ws, _, source_ws = load_wplus(tmp_path / "edit_wplus.safetensors")
    gen = load_generator(cli_models["generator"])
    assert torch.equal(source_ws, sample_source_ws(gen, 1, seed=5, truncation=0.7, labels=4))
    assert not torch.equal(source_ws, sample_source_ws(gen, 1, seed=5, truncation=0.7, labels=1))
    assert not torch.equal(ws, source_ws)


@pytest.mark.parametrize("extra, generator, message", [
    (("--class", "9"), "generator", "error: --class: class 9 is out of range: generator 'tf_sg2_labelconcat_tiny' "
                                    "has 5 classes (0..4)"),
    (("--class", "cubism"), "generator", "error: --class: generator 'tf_sg2_labelconcat_tiny' has no class named "
                                         "'cubism'"),
    (("--class", "1"), "unconditional", "error: --class: generator 'tf_sg2_tiny' is unconditional"),
    (("--class", "1", "--mode", "generate"), "generator", "error: --class: picks the class of the random source"),
])
def test_cli_class_errors(cli_models, tmp_path, capsys, extra, generator, message):
    assert _edit(cli_models, tmp_path, *extra, generator=generator) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "edit.png").exists()


def test_stylegan_xl_snapshot_refused_by_name(tmp_path, sg2_dir):
    """A StyleGAN-XL mapping network holds a plain torch.nn.Embedding (its pretrained class embedding) next
    to 'embed_proj': the restricted unpickler refuses the torch class, and the loader says what the file is."""
    from sgim_nodes.safe_pickle import restricted_load
    from test_stylegan_files import write_nvlabs_pickle

    with open(sg2_dir / "nvlabs_tiny.pkl", "rb") as f:
        tree = restricted_load(f, source="fixture", extra_allowed={("dnnlib.util", "EasyDict"): dict},
                               stub_prefixes=("torch_utils.persistence",))
    mapping = tree["G_ema"].args[0]["state"]["_modules"]["mapping"].args[0]["state"]
    mapping["_modules"]["embed"] = torch.nn.Embedding(3, 4)
    mapping["_modules"]["embed_proj"] = None
    path = write_nvlabs_pickle(tree, tmp_path / "imagenet128.pkl")
    with pytest.raises(ModelFileError, match=r"imagenet128\.pkl: a StyleGAN-XL snapshot .*"
                                             r"'torch\.nn\.modules\.sparse\.Embedding'.*not supported") as info:
        load_generator(path)
    assert not isinstance(info.value, UnsafeFileError)
    # the same torch class without StyleGAN-XL's marker stays an unexplained refusal
    del mapping["_modules"]["embed_proj"]
    with pytest.raises(UnsafeFileError, match=r"other\.pkl: refused to load 'torch\.nn\.modules\.sparse\.Embedding'"):
        load_generator(write_nvlabs_pickle(tree, tmp_path / "other.pkl"))


def test_unsupported_resample_kernel_names_the_file(tmp_path):
    gen, _, kwargs = _other("orig_8px_unconditional")
    path = write_tf_pickle(tmp_path / "odd_fir.pkl", generator_records(gen, False, {**kwargs, "resample_kernel": [1, 2, 1]}))
    with pytest.raises(ModelFileError, match=r"odd_fir\.pkl: unsupported TensorFlow generator settings .*blur_kernel"):
        load_generator(path)


def test_nvlabs_conditional_state_dict_of_another_shape(tmp_path):
    """NVlabs layout (as conversion scripts save G_ema.state_dict()), 16 px, 3 mapping layers, 7 classes
    embedded into 20 values (embed_features != w_dim)."""
    from test_stylegan_files import nvlabs_state_dict

    gen, _, _ = _other("ada_16px_embed7")
    state = nvlabs_state_dict(gen)
    ours = gen.state_dict()
    state["mapping.embed.weight"] = ours["mapping_network.label_weight"] * math.sqrt(gen.c_dim)
    state["mapping.embed.bias"] = ours["mapping_network.label_bias"].clone()
    torch.save({"G_ema": state}, tmp_path / "cond_state.pt")
    loaded = load_generator(tmp_path / "cond_state.pt")
    assert (loaded.c_dim, loaded.config.label_mode, loaded.config.label_width) == (7, "embed", 20)
    _same_images(gen, loaded)


def test_malformed_tf_kwargs_and_records_named(tmp_path):
    gen, _, kwargs = _other("orig_8px_unconditional")
    path = write_tf_pickle(tmp_path / "text_lrmul.pkl", generator_records(gen, False, {**kwargs, "mapping_lrmul": "x"}))
    with pytest.raises(ModelFileError, match=r"text_lrmul\.pkl: TensorFlow kwarg mapping_lrmul='x' is not a finite"):
        load_generator(path)
    numpy_kwargs = {k: np.int64(v) if isinstance(v, int) else v for k, v in kwargs.items()}  # as TF configs hold them
    _same_images(gen, load_generator(write_tf_pickle(tmp_path / "np.pkl", generator_records(gen, False, numpy_kwargs))))
    broken = generator_records(gen)
    del broken.state["components"]["mapping"].state["variables"]
    with pytest.raises(ModelFileError, match=r"broken\.pkl: Gs/mapping is a TensorFlow network record without"):
        load_generator(write_tf_pickle(tmp_path / "broken.pkl", broken))
