"""CLIP from local files (tiny random-weight models in every supported format) and the exact paper resize."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import tempfile
import warnings
import zipfile

import open_clip
import pytest
import torch
import torch.nn.functional as F

from sgim_nodes import clip as sgim_clip
from sgim_nodes.clip import ClipModel, load_clip, paper_resize, save_open_clip_state_dict
from sgim_nodes.errors import ModelFileError, ParameterError, UnsafeFileError

PROMPTS = ["the sound of rain", "a dog barking", "thunder", "fire crackling in a fireplace"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return sgim_clip.build_tiny_clip(seed=0)


@pytest.fixture(scope="module")
def reference(tiny):
    """What open_clip itself gives for the prompts and for a batch of [-1, 1] images (paper input)."""
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        text = F.normalize(tiny.encode_text(open_clip.tokenize(PROMPTS)), dim=-1)
        image = F.normalize(tiny.encode_image(images), dim=-1)
    return images, text, image


@pytest.fixture(scope="module")
def files(tiny, tmp_path_factory):
    """The tiny model in each supported format."""
    folder = tmp_path_factory.mktemp("clip")
    # open_clip state dicts carry their config: beside the weights as <stem>.json, or (Hugging Face hub
    # layout) as open_clip_config.json with a "model_cfg" entry
    paths = {"safetensors": folder / "tiny.safetensors", "bin": folder / "hub" / "open_clip_pytorch_model.bin"}
    save_open_clip_state_dict(tiny, paths["safetensors"], config=sgim_clip.tiny_clip_config())
    paths["bin"].parent.mkdir()
    save_open_clip_state_dict(tiny, paths["bin"])
    (paths["bin"].parent / "open_clip_config.json").write_text(json.dumps({"model_cfg": sgim_clip.tiny_clip_config(),
                                                                           "preprocess_cfg": {}}))
    # OpenAI state dict: float16 weights plus the three metadata entries of OpenAI's files
    openai = {k: (v.half() if v.is_floating_point() else v) for k, v in tiny.state_dict().items()}
    openai.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    paths["openai_state_dict"] = folder / "tiny-openai.pt"
    torch.save(openai, paths["openai_state_dict"])
    # TorchScript archive in the OpenAI layout, made like OpenAI's ViT-B-32.pt (a traced model)
    tokens = open_clip.tokenize(["x"])
    image = torch.zeros(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python control flow: irrelevant for the weights
        traced = torch.jit.trace_module(tiny, {"forward": (image, tokens), "encode_text": (tokens,),
                                               "encode_image": (image,)})
    paths["torchscript"] = folder / "ViT-tiny.pt"
    traced.save(str(paths["torchscript"]))
    return paths


FORMATS = ["safetensors", "bin", "openai_state_dict", "torchscript"]
NAMES = {"safetensors": "tiny", "bin": "hub", "openai_state_dict": "openai:tiny-openai", "torchscript": "openai:ViT-tiny"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_and_embeds_like_open_clip(files, reference, fmt):
    images, text_ref, image_ref = reference
    model = load_clip(files[fmt])
    assert isinstance(model, ClipModel) and model.embed_dim == 32 and model.image_size == 32
    assert model.name == NAMES[fmt]  # a config's name (file stem / hub folder), or the OpenAI file's
    assert not any(p.requires_grad for p in model.model.parameters()) and not model.model.training
    tolerance = 2e-3 if fmt == "openai_state_dict" else 1e-5  # that one stores float16 weights
    text = model.encode_text(PROMPTS)
    assert text.shape == (4, 32) and torch.allclose(text.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert float((text - text_ref).abs().max()) < tolerance
    image = model.image_features(images)
    assert float((image - image_ref).abs().max()) < tolerance


def test_openai_files_take_the_architecture_from_the_weights(files, reference):
    """A name given for an OpenAI file only labels it (a non-QuickGELU config must not be used)."""
    model = load_clip(files["torchscript"], model_name="ViT-tiny (OpenAI)")
    assert model.name == "ViT-tiny (OpenAI)"
    assert float((model.encode_text(PROMPTS) - reference[1]).abs().max()) < 1e-5


def test_batch_consistency(files):
    model = load_clip(files["safetensors"])
    batched = model.encode_text(PROMPTS)
    single = torch.cat([model.encode_text([p]) for p in PROMPTS])
    assert float((batched - single).abs().max()) < 1e-5
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(4, 64, 48, 3, generator=gen)  # ComfyUI IMAGE layout, not square
    batched = model.encode_image(images)
    single = torch.cat([model.encode_image(images[i:i + 1]) for i in range(4)])
    assert batched.shape == (4, 32) and float((batched - single).abs().max()) < 1e-5
    assert float((model.encode_image(images.permute(0, 3, 1, 2)) - batched).abs().max()) < 1e-6
    m11 = torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1
    batched = model.image_features(m11)
    single = torch.cat([model.image_features(m11[i:i + 1]) for i in range(3)])
    assert float((batched - single).abs().max()) < 1e-5


def test_encode_image_preprocessing_is_clip_standard(files, tiny):
    """32x32 input needs no resize: encode_image == open_clip on mean/std-normalised pixels."""
    model = load_clip(files["safetensors"])
    images = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.normalize(tiny.encode_image((images - mean) / std), dim=-1)
    assert float((model.encode_image(images) - expected).abs().max()) < 1e-5
    # normalize_input=True on [-1, 1] is the same thing
    assert float((model.image_features(images * 2 - 1, normalize_input=True) - expected).abs().max()) < 1e-5
    assert float((model.image_features(images * 2 - 1) - expected).abs().max()) > 1e-3  # paper input differs


def test_image_features_is_differentiable_inside_inference_mode(files):
    with torch.inference_mode():  # ComfyUI loads models and runs nodes like this
        model = load_clip(files["safetensors"])
        target = model.encode_text(["rain"])
    assert not target.is_inference()
    with torch.inference_mode(False), torch.enable_grad():
        image = (torch.rand(1, 3, 256, 256) * 2 - 1).requires_grad_(True)
        loss = 1 - (model.image_features(image) * target).sum()
        loss.backward()
    assert image.grad is not None and torch.isfinite(image.grad).all() and float(image.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.model.parameters())


@pytest.mark.parametrize("size", [256, 1024])
def test_paper_resize_matches_the_official_resize(fixtures_dir, size):
    from safetensors.torch import load_file

    data = load_file(str(fixtures_dir / "audio" / "clip_resize_expected.safetensors"))
    got = paper_resize(data[f"image_{size}"])
    assert got.shape == (1, 3, 224, 224)
    assert float((got - data[f"clip224_from_{size}"]).abs().max()) <= 1e-5


def test_paper_resize_equals_upsample_then_avgpool_on_continuous_images():
    gen = torch.Generator().manual_seed(0)
    for size in (64, 256):
        image = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
        official = torch.nn.AvgPool2d(size // 32)(torch.nn.Upsample(scale_factor=7, mode="nearest")(image))
        assert float((paper_resize(image) - official).abs().max()) < 2e-6


def test_paper_resize_any_resolution_keeps_averages_and_gradients():
    image = torch.full((1, 3, 300, 170), 0.25, requires_grad=True)
    out = paper_resize(image)
    assert out.shape == (1, 3, 224, 224) and torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)
    out.sum().backward()
    # every input pixel contributes its area share: gradients sum to the output count per channel
    assert abs(float(image.grad.sum()) - 3 * 224 * 224) < 0.1  # float32 sum of 150528 terms
    with pytest.raises(ParameterError):
        paper_resize(torch.zeros(3, 32, 32))


class registered_configs:
    """Test-only: put configs into open_clip's registry (what a user's own open_clip setup might hold) and
    take them out again, so that name inference can be tested against known names."""

    def __init__(self, folder, configs):
        self.paths = []
        for name, config in configs.items():
            path = folder / f"{name}.json"
            path.write_text(json.dumps(config))
            self.paths.append(path)

    def __enter__(self):
        for path in self.paths:
            open_clip.add_model_config(path)

    def __exit__(self, *exc):
        from open_clip import factory

        for path in self.paths:
            factory._MODEL_CONFIG_PATHS.remove(path)
            factory._MODEL_CONFIGS.pop(path.stem, None)


def test_model_name_inference_and_ambiguity(tiny, tmp_path):
    """Two configs with the same tensor shapes (QuickGELU or not) cannot be told apart from the weights."""
    gelu = {**sgim_clip.tiny_clip_config(), "quick_gelu": False}
    path = tmp_path / "weights.safetensors"
    save_open_clip_state_dict(tiny, path)
    with pytest.raises(ModelFileError, match="cannot tell which open_clip model.*weights.json"):
        load_clip(path)  # no config anywhere: a clear error
    with registered_configs(tmp_path, {"test-tiny-clip": sgim_clip.tiny_clip_config(), "test-tiny-clip-gelu": gelu}):
        with pytest.raises(ModelFileError, match="test-tiny-clip-gelu"):
            load_clip(path)
        assert load_clip(path, model_name="test-tiny-clip-gelu").name == "test-tiny-clip-gelu"
        named = tmp_path / "test-tiny-clip-gelu.safetensors"  # the file name settles it
        save_open_clip_state_dict(tiny, named)
        assert load_clip(named).name == "test-tiny-clip-gelu"
        with pytest.raises(ParameterError, match="unknown open_clip model"):
            load_clip(path, model_name="no-such-model")
    with pytest.raises(ModelFileError, match="do not fit"):
        load_clip(path, model_name="ViT-B-32")
    assert load_clip(path, config=sgim_clip.tiny_clip_config()).embed_dim == 32  # or the config given


def open_clip_and_process_state():
    """Everything global that loading a CLIP could touch."""
    from open_clip import factory

    return {
        "configs": copy.deepcopy(factory._MODEL_CONFIGS),
        "config_paths": list(factory._MODEL_CONFIG_PATHS),
        "models": open_clip.list_models(),
        "root_filters": list(logging.getLogger().filters),
        "temp_entries": sorted(p.name for p in __import__("pathlib").Path(tempfile.gettempdir()).glob("sgim*")),
        "default_dtype": torch.get_default_dtype(),
        "grad_enabled": torch.is_grad_enabled(),
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_loading_clip_changes_no_global_state(files, fmt):
    before = open_clip_and_process_state()
    load_clip(files[fmt]).encode_text(["rain"])
    after = open_clip_and_process_state()
    assert after == before
    assert not any("tiny-clip" in name for name in after["models"])  # test configs never enter the registry


def test_bad_files(tmp_path, fixtures_dir):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a model" * 50)
    with pytest.raises(ModelFileError, match="garbage.bin"):
        load_clip(garbage)
    with pytest.raises(ModelFileError, match="not found"):
        load_clip(tmp_path / "missing.pt")
    with pytest.raises(ModelFileError):
        load_clip(fixtures_dir / "stylegan2" / "rosinality_tiny.pt")


def test_torchscript_archive_code_is_never_run(tmp_path):
    """A TorchScript-looking archive whose pickle names a dangerous global is refused before anything runs."""

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("evil/code/__torch__/model.py", "def forward(self): pass\n")
        archive.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(UnsafeFileError, match="refused"):
        load_clip(path)


def test_check_compatible_with_real_tiny_clip(files):
    from sgim_nodes.audio import build_audio_encoder, check_compatible

    model = load_clip(files["safetensors"])
    check_compatible(build_audio_encoder(embed_dim=32), model)
    with pytest.raises(ParameterError, match="512-d"):
        check_compatible(build_audio_encoder(embed_dim=512), model)
