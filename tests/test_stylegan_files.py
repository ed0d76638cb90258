"""StyleGAN2 files: architecture inference, refused/unsafe files, and the convert command."""

from __future__ import annotations

import copy
import io
import math
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from sgim_nodes.errors import ModelFileError, ParameterError, UnsafeFileError
from sgim_nodes.safe_pickle import PlainObject, restricted_load
from sgim_nodes.stylegan import Generator, GeneratorConfig, load_generator, rosinality_checkpoint, save_generator
from test_stylegan import perturbed  # the same perturbed random generator as the network tests

REPO = Path(__file__).resolve().parents[1]
PERSISTENT = "torch_utils.persistence._reconstruct_persistent_obj"


@pytest.fixture(scope="module")
def sg_dir(fixtures_dir):
    return fixtures_dir / "stylegan2"




def same_outputs(a: Generator, b: Generator, atol: float = 1e-5):
    z = torch.randn(2, a.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(b(z, truncation_psi=0.7), a(z, truncation_psi=0.7), atol=atol, rtol=1e-5)


OTHER_CONFIGS = {
    "64px_4mapping": dict(resolution=64, z_dim=48, w_dim=48, n_mapping=4,
                          channels={4: 32, 8: 32, 16: 24, 32: 16, 64: 8}),
    "16px_8mapping_wide": dict(resolution=16, z_dim=128, w_dim=128, n_mapping=8, channels={4: 40, 8: 24, 16: 16}),
    "8px_zdim_ne_wdim": dict(resolution=8, z_dim=20, w_dim=24, n_mapping=3, mapping_hidden=36,
                             channels={4: 12, 8: 6}),
}


# ------------------------------------------------------------------------------------ architecture inference

@pytest.mark.parametrize("name", OTHER_CONFIGS)
def test_rosinality_architecture_inferred(tmp_path, name):
    gen = perturbed(GeneratorConfig(**OTHER_CONFIGS[name]))
    path = tmp_path / f"{name}.pt"
    torch.save(rosinality_checkpoint(gen), path)
    loaded = load_generator(path, modulation="weight")
    assert loaded.config.to_dict() == {**gen.config.to_dict(), "source_format": "rosinality"}
    assert loaded.num_ws == gen.num_ws == 2 * int(math.log2(gen.resolution)) - 2
    assert torch.equal(loaded.w_avg, gen.w_avg)
    same_outputs(gen, loaded)


def test_bare_state_dict_estimates_w_avg(tmp_path):
    gen = perturbed(GeneratorConfig(**OTHER_CONFIGS["8px_zdim_ne_wdim"]))
    path = tmp_path / "bare.pt"
    torch.save(rosinality_checkpoint(gen)["g_ema"], path)
    loaded = load_generator(path)
    assert torch.allclose(loaded.w_avg, gen.estimate_w_avg(4096, seed=0), atol=1e-6)
    # and it is a real mean of the mapping output: close to the mean over other samples
    with torch.no_grad():
        other = gen.mapping_network(torch.randn(4096, gen.z_dim, generator=torch.Generator().manual_seed(9))).mean(0)
    assert (loaded.w_avg - other).abs().max() < 0.1 * other.abs().max()
    assert (loaded.w_avg - gen.w_avg).abs().max() > 0.05  # not the (different) stored one


def nvlabs_state_dict(gen: Generator) -> dict[str, torch.Tensor]:
    """What ``G_ema.state_dict()`` of NVlabs code holds for this generator (raw scaling)."""
    cfg, ours = gen.config, gen.state_dict()
    out = {"mapping.w_avg": ours["w_avg"].clone(), "synthesis.b4.const": ours["synthesis_network.const"].clone()}
    for i in range(cfg.n_mapping):
        weight = ours[f"mapping_network.weights.{i}"]
        out[f"mapping.fc{i}.weight"] = weight * math.sqrt(weight.shape[1]) / cfg.mapping_lr_mul
        out[f"mapping.fc{i}.bias"] = ours[f"mapping_network.biases.{i}"] / cfg.mapping_lr_mul
    fir = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64
    layers = ["b4.conv1"] + [f"b{r}.conv{c}" for r in cfg.block_resolutions[1:] for c in (0, 1)]
    for j, name in enumerate(layers):
        src, dst = f"synthesis_network.convs.{j}.", f"synthesis.{name}."
        weight = ours[src + "weight"]
        out[dst + "weight"] = weight * math.sqrt(weight[0].numel())
        out[dst + "bias"] = ours[src + "bias"].clone()
        out[dst + "noise_strength"] = ours[src + "noise_strength"].clone()
        out[dst + "noise_const"] = ours[src + "noise_const"].clone()
        out[dst + "resample_filter"] = fir.clone()
        out[dst + "affine.weight"] = ours[src + "affine_weight"] * math.sqrt(cfg.w_dim)
        out[dst + "affine.bias"] = ours[src + "affine_bias"].clone()
    for k, res in enumerate(cfg.block_resolutions):
        src, dst = f"synthesis_network.torgbs.{k}.", f"synthesis.b{res}.torgb."
        weight = ours[src + "weight"]
        out[dst + "weight"] = (weight * math.sqrt(weight.shape[1]))[:, :, None, None]
        out[dst + "bias"] = ours[src + "bias"].clone()
        out[dst + "affine.weight"] = ours[src + "affine_weight"] * math.sqrt(cfg.w_dim)
        out[dst + "affine.bias"] = ours[src + "affine_bias"].clone()
        out[f"synthesis.b{res}.resample_filter"] = fir.clone()
    return out


@pytest.mark.parametrize("name", ["64px_4mapping", "8px_zdim_ne_wdim"])
def test_nvlabs_state_dict_architecture_inferred(tmp_path, name):
    gen = perturbed(GeneratorConfig(**OTHER_CONFIGS[name]))
    path = tmp_path / "nv.pt"
    torch.save(nvlabs_state_dict(gen), path)
    loaded = load_generator(path)
    assert loaded.config.to_dict() == {**gen.config.to_dict(), "source_format": "nvlabs"}
    same_outputs(gen, loaded)
    torch.save({"G_ema": nvlabs_state_dict(gen)}, path)  # the same, wrapped as conversion scripts do
    same_outputs(gen, load_generator(path))


def test_plain_safetensors_state_dict(tmp_path):
    from safetensors.torch import save_file

    gen = perturbed(GeneratorConfig(**OTHER_CONFIGS["8px_zdim_ne_wdim"]))
    path = tmp_path / "someone_elses.safetensors"
    save_file({k: v.contiguous() for k, v in nvlabs_state_dict(gen).items()}, str(path))
    same_outputs(gen, load_generator(path))


# ------------------------------------------------------------------------------------ NVlabs pickle variants

@pytest.fixture
def nvlabs_tree(sg_dir):
    """A fresh tree per test (PlainObject records do not survive copy.deepcopy)."""
    with open(sg_dir / "nvlabs_tiny.pkl", "rb") as f:
        return restricted_load(f, source="fixture", extra_allowed={("dnnlib.util", "EasyDict"): dict},
                               stub_prefixes=("torch_utils.persistence",))


def write_nvlabs_pickle(tree, path: Path) -> Path:
    """Write persistence records like NVlabs does, through a stand-in module that exists only while
    writing (the loader must never import or call it; other tests may check sys.modules)."""
    name = "torch_utils.persistence"
    assert "torch_utils" not in sys.modules
    pkg, mod = types.ModuleType("torch_utils"), types.ModuleType(name)

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the loader must not call this")

    _reconstruct_persistent_obj.__module__ = name
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod

    class Writer(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, PlainObject) and obj.qualname == PERSISTENT:
                return _reconstruct_persistent_obj, obj.args
            return NotImplemented

    buf = io.BytesIO()
    sys.modules["torch_utils"], sys.modules[name] = pkg, mod
    try:
        Writer(buf, protocol=4).dump(tree)
    finally:
        del sys.modules["torch_utils"], sys.modules[name]
    path.write_bytes(buf.getvalue())
    return path


def _state(record, *names):
    for name in names:
        record = record.args[0]["state"]["_modules"][name]
    return record.args[0]["state"]


def test_rewritten_nvlabs_pickle_still_loads(tmp_path, nvlabs_tree, sg_dir):
    """The test writer itself is faithful: an unmodified tree loads to the same generator."""
    path = write_nvlabs_pickle(nvlabs_tree, tmp_path / "same.pkl")
    same_outputs(load_generator(sg_dir / "nvlabs_tiny.pkl"), load_generator(path), atol=0)


def test_conditional_pickle_without_its_embedding_refused(tmp_path, nvlabs_tree):
    tree = nvlabs_tree
    _state(tree["G_ema"])["c_dim"] = 10
    path = write_nvlabs_pickle(tree, tmp_path / "cond.pkl")
    with pytest.raises(ModelFileError, match=r"cond\.pkl.*conditional"):
        load_generator(path)


def test_stylegan2_record_with_a_stylegan3_input_refused(tmp_path, nvlabs_tree):
    """An 'input' module makes the record a StyleGAN3 one (tests/test_stylegan3.py loads real ones);
    this hybrid lacks StyleGAN3's options and layers, and says so."""
    tree = nvlabs_tree
    modules = _state(tree["G_ema"], "synthesis")["_modules"]
    modules["input"] = modules.pop("b4")
    path = write_nvlabs_pickle(tree, tmp_path / "sg3.pkl")
    with pytest.raises(ModelFileError, match=r"sg3\.pkl.*StyleGAN3"):
        load_generator(path)


def test_non_skip_architecture_refused(tmp_path, nvlabs_tree):
    tree = nvlabs_tree
    _state(tree["G_ema"], "synthesis", "b16")["architecture"] = "resnet"
    path = write_nvlabs_pickle(tree, tmp_path / "resnet_g.pkl")
    with pytest.raises(ModelFileError, match=r"resnet_g\.pkl.*'resnet' is not supported"):
        load_generator(path)


def test_pickle_without_g_ema_refused(tmp_path, nvlabs_tree):
    tree = {k: v for k, v in nvlabs_tree.items() if k not in ("G_ema",)}
    path = write_nvlabs_pickle(tree, tmp_path / "no_ema.pkl")
    with pytest.raises(ModelFileError, match=r"no_ema\.pkl.*no EMA generator"):
        load_generator(path)


def test_truncated_pickle(tmp_path, sg_dir):
    data = (sg_dir / "nvlabs_tiny.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.pkl"):
        load_generator(path)


# ------------------------------------------------------------------------------------ unsafe files

class RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ImportsModule:
    def __reduce__(self):
        return subprocess.getoutput, ("true",)


def test_pickle_running_a_command_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": RunsCommand(marker)}, protocol=4))
    with pytest.raises(UnsafeFileError, match=r"evil\.pkl.*(posix|os)\.system"):
        load_generator(path)
    assert not marker.exists()


def test_pickle_importing_a_module_refused(tmp_path):
    path = tmp_path / "imports.pkl"
    path.write_bytes(pickle.dumps(ImportsModule(), protocol=4))
    with pytest.raises(UnsafeFileError, match=r"imports\.pkl.*subprocess"):
        load_generator(path)


def test_torch_file_running_a_command_refused(tmp_path, sg_dir):
    marker = tmp_path / "pwned_pt"
    checkpoint = torch.load(sg_dir / "rosinality_tiny.pt", weights_only=True)
    checkpoint["extra"] = RunsCommand(marker)
    path = tmp_path / "evil.pt"
    torch.save(checkpoint, path)
    with pytest.raises(UnsafeFileError, match=r"evil\.pt.*refused"):
        load_generator(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------ bad files

def _png_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(64)


def _write(tmp_path: Path, name: str, payload) -> Path:
    path = tmp_path / name
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("name, payload, expected", [
    ("image.pt", _png_bytes(), "PNG image"),
    ("empty.pt", b"", "empty"),
    ("notes.pkl", b"hello, I am a text file\n", "not a StyleGAN2 or StyleGAN3 checkpoint"),
    ("resnet.pt", {"conv1.weight": torch.zeros(4, 3, 7, 7), "bn1.weight": torch.ones(4),
                   "fc.weight": torch.zeros(10, 4)}, "not a StyleGAN2 generator"),
    ("list.pt", [torch.zeros(3)], "expected a checkpoint dict"),
    ("disc_only.pt", {"d": {"convs.0.0.weight": torch.zeros(3)}}, "no EMA generator"),
    ("g_ema_bad.pt", {"g_ema": {"style.1.weight": torch.zeros(8, 8)}, "latent_avg": torch.zeros(8)},
     "not a rosinality StyleGAN2 generator"),
])
def test_bad_files_named_in_error(tmp_path, name, payload, expected):
    path = _write(tmp_path, name, payload)
    with pytest.raises(ModelFileError, match=expected) as info:
        load_generator(path)
    assert name in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope\.pt: file not found"):
        load_generator(tmp_path / "nope.pt")
    with pytest.raises(ModelFileError, match="folder"):
        load_generator(tmp_path)


def test_discriminator_state_dict_refused(tmp_path, sg_dir):
    disc = torch.load(sg_dir / "rosinality_tiny.pt", weights_only=True)["d"]
    path = _write(tmp_path, "disc.pt", disc)
    with pytest.raises(ModelFileError, match=r"disc\.pt.*discriminator"):
        load_generator(path)


def test_truncated_torch_file(tmp_path, sg_dir):
    data = (sg_dir / "rosinality_tiny.pt").read_bytes()
    path = _write(tmp_path, "cut.pt", data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.pt"):
        load_generator(path)


def test_wrong_shapes_and_nan_refused(tmp_path, sg_dir):
    checkpoint = torch.load(sg_dir / "rosinality_tiny.pt", weights_only=True)
    broken = copy.deepcopy(checkpoint)
    broken["g_ema"]["convs.1.conv.weight"] = torch.zeros(1, 32, 16, 3, 3)
    with pytest.raises(ModelFileError, match=r"shapes\.pt.*do not fit"):
        load_generator(_write(tmp_path, "shapes.pt", broken))
    nan = copy.deepcopy(checkpoint)
    nan["g_ema"]["to_rgb1.bias"][0, 0] = float("nan")
    with pytest.raises(ModelFileError, match=r"nan\.pt.*NaN"):
        load_generator(_write(tmp_path, "nan.pt", nan))
    broken_avg = copy.deepcopy(checkpoint)
    broken_avg["latent_avg"] = torch.zeros(3)
    with pytest.raises(ModelFileError, match="latent_avg"):
        load_generator(_write(tmp_path, "avg.pt", broken_avg))


def test_safetensors_of_another_kind_and_truncated(tmp_path):
    from sgim_nodes.fileio import save_model_file

    other = tmp_path / "encoder.safetensors"
    save_model_file(other, {"x": torch.zeros(2)}, "audio_encoder", {"backbone": "resnet18"})
    with pytest.raises(ModelFileError, match=r"encoder\.safetensors.*'audio_encoder'"):
        load_generator(other)
    gen = tmp_path / "gen.safetensors"
    save_generator(perturbed(GeneratorConfig(**OTHER_CONFIGS["8px_zdim_ne_wdim"])), gen)
    data = gen.read_bytes()
    cut = _write(tmp_path, "cut.safetensors", data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors"):
        load_generator(cut)


# ------------------------------------------------------------------------------------ convert command

def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_convert_main_generator(tmp_path, sg_dir):
    from sgim_nodes.convert import main

    out = tmp_path / "out.safetensors"
    assert main([str(sg_dir / "nvlabs_tiny.pkl"), str(out)]) == 0
    same_outputs(load_generator(sg_dir / "nvlabs_tiny.pkl"), load_generator(out), atol=0)
    with pytest.raises(ParameterError, match="already exists"):
        main([str(sg_dir / "nvlabs_tiny.pkl"), str(out)])
    assert main([str(sg_dir / "rosinality_tiny.pt"), str(out), "--overwrite"]) == 0
    assert load_generator(out).config.source_format == "rosinality"
    with pytest.raises(ParameterError, match="is the input file"):
        main([str(out), str(out), "--overwrite"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no temporary files left


def test_convert_refuses_non_models_with_both_reasons(tmp_path):
    from sgim_nodes.convert import main

    with pytest.raises(ModelFileError, match=r"missing\.pt: file not found"):
        main([str(tmp_path / "missing.pt"), str(tmp_path / "x.safetensors")])
    bad = _write(tmp_path, "weights.pt", {"conv1.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelFileError, match="StyleGAN2"):
        main([str(bad), str(tmp_path / "x.safetensors")])
    assert not (tmp_path / "x.safetensors").exists()


def test_convert_cli_entry_points(tmp_path, sg_dir):
    out = tmp_path / "cli.safetensors"
    done = _run_cli("-m", "sgim_nodes.convert", str(sg_dir / "rosinality_tiny.pt"), str(out))
    assert done.returncode == 0, done.stderr
    assert "generator" in done.stdout and out.exists()
    from sgim_nodes.__main__ import main as sgim_main  # the dispatcher, in-process (saves a torch start-up)

    assert sgim_main(["convert", str(sg_dir / "rosinality_tiny.pt"), str(out)]) == 1  # exists: clear error
    assert sgim_main(["convert", str(sg_dir / "rosinality_tiny.pt"), str(out), "--overwrite"]) == 0


def test_convert_delegates_audio_encoders(tmp_path, monkeypatch):
    """A file that is not a generator goes to the audio package's loader/saver (stand-ins here: the
    real ones are tested with the audio encoder)."""
    audio = pytest.importorskip("sgim_nodes.audio")
    from sgim_nodes.convert import main

    calls = []

    class FakeEncoder:
        config = {"backbone": "resnet18"}

    def fake_load(path):
        calls.append(("load", Path(path)))
        if Path(path).name != "resnet18_57.pth":
            raise ModelFileError(f"{path}: not a SoundCLIP audio encoder")
        return FakeEncoder()

    monkeypatch.setattr(audio, "load_audio_encoder", fake_load, raising=False)
    monkeypatch.setattr(audio, "save_audio_encoder", lambda enc, path: calls.append(("save", Path(path))),
                        raising=False)
    official = _write(tmp_path, "resnet18_57.pth", {"conv.weight": torch.zeros(3, 1, 3, 3)})
    out = tmp_path / "encoder.safetensors"
    assert main([str(official), str(out)]) == 0
    assert calls == [("load", official), ("save", out)]
    other = _write(tmp_path, "other.pth", {"conv.weight": torch.zeros(3, 1, 3, 3)})
    with pytest.raises(ModelFileError, match="neither a StyleGAN2/3 generator nor an audio encoder"):
        main([str(other), str(tmp_path / "x.safetensors")])


def test_legacy_torch_save_format(tmp_path, sg_dir):
    """Checkpoints written by old torch (non-zip torch.save) load through the same safe path."""
    checkpoint = torch.load(sg_dir / "rosinality_tiny.pt", weights_only=True)
    checkpoint = {"g_ema": checkpoint["g_ema"], "latent_avg": checkpoint["latent_avg"]}
    path = tmp_path / "legacy.pt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b"PK")
    same_outputs(load_generator(sg_dir / "rosinality_tiny.pt"), load_generator(path), atol=0)
