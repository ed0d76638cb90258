"""Unit tests of the ComfyUI node classes, without ComfyUI.

The pack is imported the way ComfyUI imports it (``__init__.py`` by file path, under a package
name that is not ``sgim_nodes``), with a small stand-in for ``folder_paths`` pointing at tiny
random-weight models written in the real formats. Every node function runs under
``torch.inference_mode()`` as in ComfyUI, and inputs are checked to be unchanged afterwards.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from tiny_models import write_tiny_models  # noqa: E402

PACK_MODULE = "custom_nodes_x_comfyui_sgim_under_test"
CORE_TYPES = {"AUDIO", "IMAGE", "STRING", "INT", "FLOAT", "BOOLEAN", "VIDEO"}


def fake_folder_paths(base: Path) -> types.ModuleType:
    """The parts of ComfyUI's folder_paths the pack uses, with the same semantics."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(base / "models")
    fp.folder_names_and_paths = {
        # as extra_model_paths.yaml leaves a key the pack will register: user path, empty extension set
        "stylegan": ([str(base / "user_stylegan")], set()),
    }

    def add_model_folder_path(key, path, is_default=False):
        paths, exts = fp.folder_names_and_paths.setdefault(key, ([], set()))
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    def get_filename_list(key):
        paths, exts = fp.folder_names_and_paths[key]
        names = set()
        for root in paths:
            if os.path.isdir(root):
                for name in os.listdir(root):
                    if not exts or os.path.splitext(name)[1] in exts:
                        names.add(name)
        return sorted(names)

    def get_full_path(key, name):
        for root in fp.folder_names_and_paths.get(key, ([], set()))[0]:
            path = os.path.join(root, os.path.normpath("/" + name).lstrip("/"))
            if os.path.isfile(path):
                return path
        return None

    def get_annotated_filepath(name):
        if name.endswith(" [output]"):
            return os.path.join(fp.get_output_directory(), name[:-9])
        return os.path.join(fp.get_input_directory(), name)

    def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
            raise Exception("Saving image outside the output folder is not allowed.")
        numbers = [int(f[len(filename) + 1:].split("_")[0]) for f in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if f.startswith(filename + "_") and f[len(filename) + 1:].split("_")[0].isdigit()]
        return folder, filename, max(numbers, default=0) + 1, subfolder, filename_prefix

    fp.add_model_folder_path = add_model_folder_path
    fp.get_save_image_path = get_save_image_path
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_annotated_filepath = get_annotated_filepath
    fp.get_output_directory = lambda: str(base / "output")
    fp.get_input_directory = lambda: str(base / "input")
    return fp


@pytest.fixture(scope="module")
def comfy_base(tmp_path_factory, shared):
    base = tmp_path_factory.mktemp("comfy_base")
    names = write_tiny_models(base / "models", shared)
    (base / "output").mkdir()
    (base / "input").mkdir()
    return base, names


@pytest.fixture(scope="module")
def pack(comfy_base):
    base, _ = comfy_base
    fp = fake_folder_paths(base)
    saved = sys.modules.get("folder_paths")
    sys.modules["folder_paths"] = fp
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(PACK_MODULE, None)
    for name in [n for n in sys.modules if n.startswith(PACK_MODULE + ".")]:
        sys.modules.pop(name)
    if saved is None:
        sys.modules.pop("folder_paths", None)
    else:
        sys.modules["folder_paths"] = saved


@pytest.fixture(scope="module")
def nodes(pack):
    return sys.modules[PACK_MODULE + ".nodes"]


@pytest.fixture(scope="module")
def errors(pack):
    return sys.modules[PACK_MODULE + ".sgim_nodes.errors"]


def run(node_id, nodes, **inputs):
    """Call a node the way ComfyUI does: a fresh instance, under inference mode."""
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(**inputs)


@pytest.fixture(scope="module")
def models(nodes, comfy_base):
    _, names = comfy_base
    generator, = run("SGIMLoadStyleGAN", nodes, generator_name=names["generator"])
    generator16, = run("SGIMLoadStyleGAN", nodes, generator_name=names["generator16"])
    clip, = run("SGIMLoadCLIP", nodes, clip_name=names["clip"], model_name="")
    encoder, = run("SGIMLoadAudioEncoder", nodes, encoder_name=names["encoder"])
    wide, = run("SGIMLoadAudioEncoder", nodes, encoder_name=names["wide_encoder"])
    return types.SimpleNamespace(generator=generator, generator16=generator16, clip=clip, encoder=encoder,
                                 wide_encoder=wide, names=names)


@pytest.fixture(scope="module")
def sound(audio_dir):
    from sgim_nodes.audio import load_audio

    waveform, rate = load_audio(audio_dir / "thunderstorm.wav")
    return {"waveform": waveform[None, :, : rate * 3].clone(), "sample_rate": rate}  # core AUDIO, 3 s


def snapshot(value):
    """Deep copy of tensors inside a value, to check a node left its inputs alone."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: snapshot(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, torch.nn.Module):
        return {k: v.detach().clone() for k, v in value.state_dict().items()}
    return value


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------------------ definitions

def test_every_node_definition_is_valid(nodes, comfy_base):
    assert len(nodes.NODE_CLASS_MAPPINGS) == 28  # 24 + Instant Edit + 3 file-backed music nodes
    assert set(nodes.NODE_DISPLAY_NAME_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)
    deprecated = {k for k, cls in nodes.NODE_CLASS_MAPPINGS.items() if getattr(cls, "DEPRECATED", False)}
    assert deprecated == {"SGIMDecode", "SGIMSaveLatent", "SGIMLoadLatent"}  # old ids: still load, hidden in search
    assert "Latent" not in " ".join(v for k, v in nodes.NODE_DISPLAY_NAME_MAPPINGS.items()
                                    if "Save" in k or "Load" in k)  # never confused with core's Save/Load Latent
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("SGIM")
        assert {"sound", "audio", "music", "stylegan"} <= set(cls.SEARCH_ALIASES), node_id
        assert cls.DESCRIPTION.strip(), node_id
        assert cls.CATEGORY == "SGIM" or cls.CATEGORY.startswith("SGIM/"), node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        assert isinstance(cls.RETURN_TYPES, tuple)
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
        for type_name in cls.RETURN_TYPES:
            assert type_name in CORE_TYPES or type_name.startswith("SGIM_"), (node_id, type_name)
        if not cls.RETURN_TYPES:
            assert getattr(cls, "OUTPUT_NODE", False), f"{node_id} returns nothing and is not an output node"
        for attr in ("IS_CHANGED", "VALIDATE_INPUTS", "INPUT_TYPES"):
            if hasattr(cls, attr):  # ComfyUI calls them on the class
                assert isinstance(inspect.getattr_static(cls, attr), classmethod), (node_id, attr)
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if isinstance(kind, list):  # combo
                    if "default" in options:
                        assert options["default"] in kind, (node_id, name)
                    continue
                assert kind in CORE_TYPES or kind.startswith("SGIM_"), (node_id, name, kind)
                if kind in ("INT", "FLOAT"):
                    lo, hi, default = options["min"], options["max"], options["default"]
                    assert lo <= default <= hi, (node_id, name)
                    assert isinstance(default, int if kind == "INT" else (int, float))
        # every widget input is accepted by the function (optional inputs may be absent)
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for section in ("required", "optional", "hidden"):
            for name in spec.get(section, {}):
                assert name in params, (node_id, name)
        for name in spec.get("optional", {}):
            assert params[name].default is not inspect.Parameter.empty, (node_id, name)


def test_model_folders_registered_like_comfyui_expects(pack, nodes, comfy_base):
    base, names = comfy_base
    fp = sys.modules["folder_paths"]
    paths, exts = fp.folder_names_and_paths["stylegan"]
    assert paths[0] == str(base / "user_stylegan")  # the user's extra_model_paths entry is kept
    assert {".pt", ".pkl", ".safetensors"} <= exts  # and now filters our extensions
    for key in ("sgim_audio_encoders", "sgim_clip", "sgim_identity", "sgim_vgg"):
        paths, exts = fp.folder_names_and_paths[key]
        assert paths[0] == os.path.join(fp.models_dir, key)
        assert str(REPO / "models" / key) in paths  # the pack's own models/ folder is searched too
    assert "clip" not in fp.folder_names_and_paths and "audio_encoders" not in fp.folder_names_and_paths
    combo = nodes.SGIMLoadStyleGAN.INPUT_TYPES()["required"]["generator_name"][0]
    assert names["generator"] in combo and names["generator16"] in combo
    assert pack.WEB_DIRECTORY == "./web" and (REPO / "web" / "sgim.js").is_file()


# ------------------------------------------------------------------------------ loaders

def test_loaders_keep_no_model_and_track_file_changes(nodes, models, comfy_base):
    import gc
    import weakref

    base, names = comfy_base
    # ComfyUI's node cache keeps a loader's output; the pack itself holds no reference, so that
    # "Free memory" releases every model. Also after the editor asked for the layout and a node ran it.
    again, = run("SGIMLoadStyleGAN", nodes, generator_name=names["generator"])
    assert again is not models.generator
    nodes.generator_info(names["generator"])
    run("SGIMStyleGANDecode", nodes, generator=again, wplus={"ws": again.w_avg.expand(1, 8, -1), "generator": ""})
    gone = weakref.ref(again)
    del again
    gc.collect()
    assert gone() is None
    assert models.generator.num_ws == 8 and models.generator16.num_ws == 6
    assert not any(p.is_inference() for p in models.generator.parameters())  # usable by autograd later
    path = base / "models" / "stylegan" / names["generator16"]
    before = nodes.SGIMLoadStyleGAN.IS_CHANGED(generator_name=names["generator16"])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = nodes.SGIMLoadStyleGAN.IS_CHANGED(generator_name=names["generator16"])
    assert before != after
    reloaded, = run("SGIMLoadStyleGAN", nodes, generator_name=names["generator16"])
    assert reloaded is not models.generator16 and reloaded.num_ws == 6
    assert math.isnan(nodes.SGIMLoadStyleGAN.IS_CHANGED(generator_name="missing.pt"))
    clip_a = nodes.SGIMLoadCLIP.IS_CHANGED(clip_name=names["clip"], model_name="")
    assert clip_a != nodes.SGIMLoadCLIP.IS_CHANGED(clip_name=names["clip"], model_name="ViT-B-32")
    assert clip_a == nodes.SGIMLoadCLIP.IS_CHANGED(clip_name=names["clip"], model_name="")


def test_generator_info_for_the_layer_mask_editor(nodes, models, errors):
    info = nodes.generator_info(models.names["generator"])
    assert info["num_ws"] == 8 and info["resolution"] == 32 and info["w_dim"] == 64
    assert info["groups"]["coarse"] == [1.0] * 4 + [0.0] * 4 and info["groups"]["fine"] == [0.0] * 8
    with pytest.raises(errors.ModelFileError, match="'landscape.pt' is not in models/stylegan"):
        nodes.generator_info("landscape.pt")


def test_wrong_model_files_name_the_node_input(nodes, models, errors):
    names = models.names
    with pytest.raises(errors.ModelFileError, match=r"Load StyleGAN, input 'generator_name'.*not_a_model\.pt"):
        run("SGIMLoadStyleGAN", nodes, generator_name=names["bad_generator"])
    with pytest.raises(errors.ModelFileError, match=r"Load Audio Encoder, input 'encoder_name'"):
        run("SGIMLoadAudioEncoder", nodes, encoder_name="nope.safetensors")
    # a generator file given to the CLIP loader
    fp = sys.modules["folder_paths"]
    stylegan_dir = fp.folder_names_and_paths["stylegan"][0][1]
    fp.folder_names_and_paths["sgim_clip"][0].append(stylegan_dir)
    try:
        with pytest.raises(errors.SGIMError, match=r"Load CLIP, input 'clip_name'"):
            run("SGIMLoadCLIP", nodes, clip_name=names["generator16"], model_name="")
    finally:
        fp.folder_names_and_paths["sgim_clip"][0].remove(stylegan_dir)


def test_nvlabs_pickle_loads_through_the_node(nodes, models):
    generator, = run("SGIMLoadStyleGAN", nodes, generator_name="nvlabs_tiny.pkl")
    assert generator.num_ws == 8 and generator.resolution == 32
    src, = run("SGIMSourceLatent", nodes, generator=generator, seed=0, truncation_psi=1.0, mode="random", batch_size=1)
    image, = run("SGIMStyleGANDecode", nodes, generator=generator, wplus=src, noise_mode="const")
    assert image.shape == (1, 32, 32, 3) and image.std() > 0.01
    old_id, = run("SGIMDecode", nodes, generator=generator, wplus=src, noise_mode="const")  # saved workflows
    assert torch.equal(old_id, image)


def test_identity_loader(nodes, models, monkeypatch, pack):
    identity = importlib.import_module(PACK_MODULE + ".sgim_nodes.optimize.identity")
    # the library's loader builds the full IR-SE50 by default; the tiny test file needs its config
    monkeypatch.setattr(identity.load_id_model, "__defaults__", ("cpu", identity.TINY_IRSE))
    model, = run("SGIMLoadIdentityModel", nodes, identity_name=models.names["identity"])
    assert isinstance(model, torch.nn.Module)
    assert not any(p.requires_grad for p in model.parameters())
    # a face-style edit with the identity term switched on
    g = models.generator
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a smiling face")
    src, = run("SGIMSourceLatent", nodes, generator=g, seed=2, truncation_psi=0.7, mode="random", batch_size=1)
    wplus, log = run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=text, source=src, steps=3,
                     lr=0.05, lambda_sim=0.008, lambda_id=0.5, adaptive_mask=True, preview_every=0,
                     identity_model=model)
    history = json.loads(log)["history"]
    assert history[0]["identity"] == pytest.approx(0.0, abs=1e-4)  # step 1 starts at the source
    assert history[-1]["identity"] > 1e-6  # the face moved, the identity term sees it
    assert not torch.equal(wplus["ws"], src["ws"])


# ------------------------------------------------------------------------------ embeddings

def test_embed_audio_text_image_and_mix(nodes, models, sound):
    before = snapshot(sound)
    audio, = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound, start_seconds=0.0,
                 end_seconds=0.0, hop_seconds=0.0, pool="mean")
    assert same(sound, before)
    assert audio.vectors.shape == (1, 1, models.clip.embed_dim)
    assert torch.allclose(audio.vectors.norm(dim=-1), torch.ones(1, 1), atol=1e-5)
    first, = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound, pool="first")
    assert torch.allclose(first.vectors, audio.vectors, atol=1e-5)  # 3 s: one window, same result
    later, = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound, start_seconds=1.0,
                 end_seconds=2.5)
    assert (later.vectors - audio.vectors).abs().max() > 1e-4  # another part of the sound

    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="thunder\nrain", batch_lines=True)
    assert text.vectors.shape == (2, 1, models.clip.embed_dim)
    image = torch.rand(2, 40, 48, 3)
    image_before = image.clone()
    pictures, = run("SGIMEmbedImage", nodes, clip=models.clip, image=image)
    assert torch.equal(image, image_before) and pictures.vectors.shape == (2, 1, models.clip.embed_dim)

    mixed, = run("SGIMMixEmbeddings", nodes, embedding_a=audio, weight_a=3.0, embedding_b=text, weight_b=1.0)
    assert mixed.vectors.shape == (2, 2, models.clip.embed_dim)
    assert mixed.weights == pytest.approx((0.75, 0.25))
    assert torch.equal(mixed.vectors[1, 0], audio.vectors[0, 0]) and torch.equal(mixed.vectors[1, 1], text.vectors[1, 0])
    assert audio.vectors.shape == (1, 1, models.clip.embed_dim)  # inputs untouched


def test_embedding_errors_name_inputs(nodes, models, sound, errors):
    with pytest.raises(errors.ParameterError, match="Embed Audio, input 'end_seconds'"):
        run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound, start_seconds=2.0, end_seconds=1.0)
    with pytest.raises(errors.ParameterError, match="Embed Text, input 'text'"):
        run("SGIMEmbedText", nodes, clip=models.clip, text="   ")
    silent = {"waveform": torch.zeros(1, 1, 0), "sample_rate": 44100}
    with pytest.raises(errors.SGIMError, match="Embed Audio, input 'audio'"):
        run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=silent)
    wide, = run("SGIMEmbedAudio", nodes, audio_encoder=models.wide_encoder, audio=sound)
    audio, = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound)
    with pytest.raises(errors.ParameterError, match="Mix Embeddings, input 'embedding_b'.*different CLIP spaces"):
        run("SGIMMixEmbeddings", nodes, embedding_a=audio, weight_a=1.0, embedding_b=wide, weight_b=1.0)


# ------------------------------------------------------------------------------ latents

def test_layer_mask_presets_custom_and_errors(nodes, models, errors):
    g = models.generator
    coarse, = run("SGIMLayerMask", nodes, generator=g, preset="coarse", weights="")
    assert coarse.freedom == (1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    mask = coarse.layer_mask()
    assert mask.frozen.tolist() == [False] * 4 + [True] * 4
    custom, = run("SGIMLayerMask", nodes, generator=g, preset="custom", weights=json.dumps([1, 0.5, 0, 0, 0, 0, 0, 1]))
    lm = custom.layer_mask()
    assert lm.weights[:2].tolist() == [1.0, 2.0] and lm.frozen.tolist() == [False, False] + [True] * 5 + [False]
    with pytest.raises(errors.ParameterError, match=r"Layer Mask, input 'weights': .*3 values given.*8 W\+ layers"):
        run("SGIMLayerMask", nodes, generator=g, preset="custom", weights="[1, 1, 1]")
    with pytest.raises(errors.ParameterError, match="Layer Mask, input 'weights': not valid JSON"):
        run("SGIMLayerMask", nodes, generator=g, preset="custom", weights="[1, ")
    with pytest.raises(errors.ParameterError, match="Layer Mask, input 'weights'"):
        run("SGIMLayerMask", nodes, generator=g, preset="custom", weights="[2, 1, 1, 1, 1, 1, 1, 1]")
    with pytest.raises(errors.ParameterError, match="Layer Mask, input 'preset'"):
        run("SGIMLayerMask", nodes, generator=g, preset="fine", weights="")  # 32 px: no fine layers


def test_source_latent_style_mix_decode_and_latent_files(nodes, models, comfy_base, errors):
    base, _ = comfy_base
    g = models.generator
    src, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=2)
    assert src["ws"].shape == (2, 8, 64) and src["generator"] == g.name
    again, = run("SGIMSourceLatent", nodes, generator=g, seed=7, truncation_psi=0.7, mode="random", batch_size=2)
    assert torch.equal(src["ws"], again["ws"])
    other, = run("SGIMSourceLatent", nodes, generator=g, seed=8, truncation_psi=0.7, mode="random", batch_size=2)
    assert not torch.allclose(src["ws"], other["ws"])
    mean, = run("SGIMSourceLatent", nodes, generator=g, seed=0, truncation_psi=0.7, mode="mean", batch_size=1)
    assert torch.equal(mean["ws"][0, 3], g.w_avg)

    before = snapshot([src, mean])
    mixed, = run("SGIMStyleMix", nodes, wplus_a=src, wplus_b=mean, layers_from_b="middle", custom_layers="")
    assert torch.equal(mixed["ws"][:, :4], src["ws"][:, :4]) and torch.equal(mixed["ws"][:, 4:], mean["ws"][:, 4:].expand(2, -1, -1))
    custom, = run("SGIMStyleMix", nodes, wplus_a=src, wplus_b=mean, layers_from_b="custom", custom_layers="0, 6-")
    assert torch.equal(custom["ws"][:, [0, 6, 7]], mean["ws"][:, [0, 6, 7]].expand(2, -1, -1))
    assert torch.equal(custom["ws"][:, 1:6], src["ws"][:, 1:6])
    half, = run("SGIMLayerMask", nodes, generator=g, preset="custom", weights=json.dumps([0.5] * 8))
    blended, = run("SGIMStyleMix", nodes, wplus_a=src, wplus_b=mean, layers_from_b="custom", custom_layers="",
                   layer_mask=half)
    assert torch.allclose(blended["ws"], (src["ws"] + mean["ws"]) / 2, atol=1e-6)
    assert same(snapshot([src, mean]), before)
    with pytest.raises(errors.ParameterError, match="Style Mix, input 'custom_layers'"):
        run("SGIMStyleMix", nodes, wplus_a=src, wplus_b=mean, layers_from_b="custom", custom_layers="0-30")

    image, = run("SGIMStyleGANDecode", nodes, generator=g, wplus=src, noise_mode="const")
    assert image.shape == (2, 32, 32, 3) and image.device.type == "cpu"
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01
    with torch.no_grad():
        expected = ((g.synthesis(src["ws"]) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(image, expected, atol=1e-6)
    with pytest.raises(errors.ParameterError, match=r"StyleGAN Decode, input 'wplus'.*\[batch, 6, 32\]"):
        run("SGIMStyleGANDecode", nodes, generator=models.generator16, wplus=src)

    import shutil

    from safetensors import safe_open

    workflow = {"nodes": [{"id": 1, "type": "SGIMSaveWPlus"}]}
    out = run("SGIMSaveWPlus", nodes, wplus=src, filename_prefix="edits/test", prompt={"1": {"class_type": "x"}},
              extra_pnginfo={"workflow": workflow})
    assert out["ui"]["text"] == ["saved edits/test_00001.safetensors"]  # numbered as Save Image numbers
    out2 = run("SGIMSaveWPlus", nodes, wplus=src, filename_prefix="edits/test")
    assert out2["ui"]["wplus"] == [{"filename": "test_00002.safetensors", "subfolder": "edits", "type": "output"}]
    saved = base / "output" / "edits" / "test_00001.safetensors"
    with safe_open(str(saved), "pt") as f:  # prompt and workflow embedded like core's savers do
        metadata = f.metadata()
    assert metadata["generator"] == g.name and json.loads(metadata["workflow"]) == workflow
    assert json.loads(metadata["prompt"]) == {"1": {"class_type": "x"}}
    with pytest.raises(errors.ParameterError, match="Save W\\+ Code, input 'filename_prefix'"):
        run("SGIMSaveWPlus", nodes, wplus=src, filename_prefix="../../escape")
    # Load lists input/sgim_wplus only: an output tree full of files is never walked
    (base / "output" / "deep" / "tree").mkdir(parents=True)
    shutil.copyfile(saved, base / "output" / "deep" / "tree" / "x.safetensors")
    assert nodes.SGIMLoadWPlus.INPUT_TYPES()["required"]["w_plus_file"][0] == []
    (base / "input" / "sgim_wplus").mkdir()
    shutil.copyfile(saved, base / "input" / "sgim_wplus" / "edit.safetensors")
    assert nodes.SGIMLoadWPlus.INPUT_TYPES()["required"]["w_plus_file"][0] == ["edit.safetensors"]
    loaded, = run("SGIMLoadWPlus", nodes, w_plus_file="edit.safetensors")
    assert torch.equal(loaded["ws"], src["ws"]) and loaded["generator"] == g.name
    # the old id with an old "[output]" value still loads
    assert nodes.SGIMLoadLatent.VALIDATE_INPUTS(latent_file="edits/test_00001.safetensors [output]") is True
    old, = run("SGIMLoadLatent", nodes, latent_file="edits/test_00001.safetensors [output]")
    assert torch.equal(old["ws"], src["ws"])
    assert nodes.SGIMLoadLatent.VALIDATE_INPUTS(latent_file="../../../etc/passwd") is not True
    (base / "input" / "sgim_wplus" / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(errors.ModelFileError, match="Load W\\+ Code, input 'w_plus_file': junk.safetensors"):
        run("SGIMLoadWPlus", nodes, w_plus_file="junk.safetensors")


# ------------------------------------------------------------------------------ optimiser

class FakeInterrupt(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


@pytest.fixture()
def fake_comfy(monkeypatch):
    """comfy.model_management / comfy.utils / server stand-ins recording what the node reports."""
    record = types.SimpleNamespace(progress=[], previews=[], events=[], texts=[], interrupt_at=None, checks=0,
                                   cache_emptied=0, loads=[])

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")

    def load_models_gpu(patchers, memory_required=0, force_full_load=False, **_):
        # what ComfyUI's loader does with a full load: move each patcher's module to its load device
        record.loads.append((list(patchers), force_full_load))
        for patcher in patchers:
            patcher.model.to(patcher.load_device)

    mm.load_models_gpu = load_models_gpu

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    patcher_module = types.ModuleType("comfy.model_patcher")
    patcher_module.ModelPatcher = ModelPatcher

    def throw_exception_if_processing_interrupted():
        record.checks += 1
        if record.interrupt_at is not None and record.checks >= record.interrupt_at:
            raise FakeInterrupt("interrupted")

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    def soft_empty_cache():
        record.cache_emptied += 1

    mm.soft_empty_cache = soft_empty_cache

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.node_id = total, node_id

        def update_absolute(self, value, total=None, preview=None):
            record.progress.append((value, total or self.total, self.node_id))
            if preview is not None:
                record.previews.append(preview)

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils, comfy.model_patcher = mm, utils, patcher_module

    class Server:
        client_id = "client-1"

        def send_sync(self, event, data, sid=None):
            record.events.append((event, data, sid))

        def send_progress_text(self, text, node_id, sid=None):
            record.texts.append((text, node_id))

    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=Server())
    for name, module in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.utils", utils),
                         ("comfy.model_patcher", patcher_module), ("server", server)):
        monkeypatch.setitem(sys.modules, name, module)
    return record


def test_optimize_latent_reports_progress_and_edits(nodes, models, sound, fake_comfy):
    g = models.generator
    audio, = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound)
    src, = run("SGIMSourceLatent", nodes, generator=g, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
    mask, = run("SGIMLayerMask", nodes, generator=g, preset="coarse", weights="")
    before = snapshot([audio, src, mask])
    params_before = snapshot(g)
    wplus, log = run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=audio, source=src, steps=6,
                     lr=0.1, lambda_sim=0.002, lambda_id=0.0, adaptive_mask=True, preview_every=3,
                     layer_mask=mask, unique_id="17")
    assert same(snapshot([audio, src, mask]), before) and same(snapshot(g), params_before)
    assert wplus["ws"].shape == (1, 8, 64)
    assert torch.equal(wplus["ws"][:, 4:], src["ws"][:, 4:])  # frozen fine layers bit-identical
    assert (wplus["ws"][:, :4] - src["ws"][:, :4]).abs().max() > 1e-4  # coarse layers moved
    history = json.loads(log)["history"]
    assert len(history) == 6 and {"total", "clip", "similarity"} <= set(history[0])
    assert [p[0] for p in fake_comfy.progress] == [1, 2, 3, 4, 5, 6]
    assert all(p[1:] == (6, "17") for p in fake_comfy.progress)
    assert len(fake_comfy.previews) == 2  # steps 3 and 6
    kind, picture, size = fake_comfy.previews[0]
    assert kind == "JPEG" and picture.size == (32, 32) and picture.mode == "RGB" and size == 32  # the real size: the caption shows it
    losses = [e for e in fake_comfy.events if e[0] == "sgim.loss"]
    assert len(losses) == 6 and losses[-1][1]["step"] == 6 and losses[-1][2] == "client-1"
    assert losses[0][1]["terms"]["clip"] == pytest.approx(history[0]["clip"])
    assert not fake_comfy.texts  # one readout (web/sgim.js, from the events), no duplicate progress text
    assert fake_comfy.cache_emptied == 1
    # the models ran under ComfyUI's model management: generator and CLIP loaded together, fully
    patchers, full = fake_comfy.loads[-1]
    assert full and [p.model.inner for p in patchers] == [g, models.clip.model]

    # same inputs and seed: same result; another seed of the optimiser is allowed to differ only via noise
    again, _ = run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=audio, source=src, steps=6,
                   lr=0.1, lambda_sim=0.002, lambda_id=0.0, adaptive_mask=True, preview_every=0,
                   layer_mask=mask, unique_id="17")
    assert torch.equal(again["ws"], wplus["ws"])


def test_optimize_latent_stops_on_interrupt(nodes, models, sound, fake_comfy):
    g = models.generator
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm")
    src, = run("SGIMSourceLatent", nodes, generator=g, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
    fake_comfy.interrupt_at = 3  # Cancel pressed during the third step
    with pytest.raises(FakeInterrupt):  # ComfyUI's own exception comes out, not wrapped or swallowed
        run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=text, source=src, steps=50,
            lr=0.1, lambda_sim=0.002, lambda_id=0.0, adaptive_mask=False, preview_every=0, unique_id="5")
    assert len(fake_comfy.progress) == 2  # stopped within one step
    assert fake_comfy.cache_emptied == 1  # memory handed back on the way out


def test_optimize_latent_errors_name_inputs(nodes, models, sound, errors, fake_comfy):
    g = models.generator
    src, = run("SGIMSourceLatent", nodes, generator=g, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
    wide, = run("SGIMEmbedAudio", nodes, audio_encoder=models.wide_encoder, audio=sound)
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm")
    common = dict(generator=g, clip=models.clip, steps=2, lr=0.1, lambda_sim=0.002, adaptive_mask=False,
                  preview_every=0)
    with pytest.raises(errors.ParameterError, match=r"Optimize Latent, input 'clip'.*embed_dim"):
        run("SGIMOptimizeLatent", nodes, target=wide, source=src, lambda_id=0.0, **common)
    mask16, = run("SGIMLayerMask", nodes, generator=models.generator16, preset="all", weights="")
    with pytest.raises(errors.ParameterError, match=r"Optimize Latent, input 'layer_mask'.*6 layers.*num_ws = 8"):
        run("SGIMOptimizeLatent", nodes, target=text, source=src, lambda_id=0.0, layer_mask=mask16, **common)
    src16, = run("SGIMSourceLatent", nodes, generator=models.generator16, seed=1, truncation_psi=0.7, mode="random",
                 batch_size=1)
    with pytest.raises(errors.ParameterError, match=r"Optimize Latent, input 'source'"):
        run("SGIMOptimizeLatent", nodes, target=text, source=src16, lambda_id=0.0, **common)
    with pytest.raises(errors.ParameterError, match=r"Optimize Latent, input 'identity_model'"):
        run("SGIMOptimizeLatent", nodes, target=text, source=src, lambda_id=0.005, **common)


def test_models_are_registered_once_and_die_with_their_owner(nodes, comfy_base, fake_comfy):
    import gc
    import weakref

    _, names = comfy_base
    generator, = run("SGIMLoadStyleGAN", nodes, generator_name=names["generator"])
    clip, = run("SGIMLoadCLIP", nodes, clip_name=names["clip"], model_name="")
    src = {"ws": generator.w_avg.expand(1, 8, -1).clone(), "generator": generator.name}
    run("SGIMStyleGANDecode", nodes, generator=generator, wplus=src)
    run("SGIMStyleGANDecode", nodes, generator=generator, wplus=src)
    run("SGIMEmbedText", nodes, clip=clip, text="rain")
    first, second, third = [patchers for patchers, _ in fake_comfy.loads]
    assert first[0] is second[0]  # one ModelPatcher per model, so ComfyUI tracks it as one loaded model
    assert first[0].model.inner is generator and third[0].model.inner is clip.model
    assert first[0].load_device == torch.device("cpu") and first[0].offload_device == torch.device("cpu")
    # the patcher lives on the model: when ComfyUI's cache drops the model, nothing of ours keeps it
    model_gone, patcher_gone = weakref.ref(generator), weakref.ref(first[0])
    del generator, first, second, third, src
    fake_comfy.loads.clear()
    gc.collect()
    assert model_gone() is None and patcher_gone() is None


def test_on_device_without_comfyui_moves_in_place(nodes, comfy_base):
    _, names = comfy_base
    generator, = run("SGIMLoadStyleGAN", nodes, generator_name=names["generator"])
    assert nodes.on_device(generator, torch.device("cpu")) is generator
    assert nodes.models_on_device([generator, None], torch.device("cpu")) == [generator, None]
    with torch.inference_mode():  # ComfyUI runs nodes under inference mode; the weights stay usable
        nodes.on_device(generator, torch.device("meta"))
    assert generator.device.type == "meta" and not any(p.is_inference() for p in generator.parameters())


def test_optimize_node_leaves_the_process_allocator_alone(nodes, models, sound, fake_comfy, monkeypatch, pack):
    """mallopt settings are process-wide and glibc cannot read them back, so the node never changes them."""
    memory = importlib.import_module(PACK_MODULE + ".sgim_nodes.memory")
    calls = []

    class RecordingLibc:
        def mallopt(self, param, value):
            calls.append(("mallopt", param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("malloc_trim", pad))
            return 1

    monkeypatch.setattr(memory, "_LIBC", RecordingLibc())
    g = models.generator
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm")
    src, = run("SGIMSourceLatent", nodes, generator=g, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
    run("SGIMOptimizeLatent", nodes, generator=g, clip=models.clip, target=text, source=src, steps=2, lr=0.1,
        lambda_sim=0.002, lambda_id=0.0, adaptive_mask=False, preview_every=0)
    assert calls == []
    with memory.reuse_freed_memory():  # the library's hint itself still acts (the command line uses it)
        pass
    assert calls and calls[0][0] == "mallopt"


def test_near_silent_or_short_audio_warns_with_the_level(nodes, models, sound, fake_comfy):
    plain = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=sound, unique_id="4")
    assert isinstance(plain, tuple) and not fake_comfy.texts  # a real sound: no warning
    quiet = {"waveform": sound["waveform"] * 1e-4, "sample_rate": sound["sample_rate"]}  # -80 dB
    out = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=quiet, unique_id="4")
    warning = out["ui"]["text"][0]
    assert "near-silent" in warning and "dBFS" in warning and out["result"][0].vectors.shape[-1] == 32
    level = float(warning.split("RMS level ")[1].split(" dBFS")[0])
    full = 20 * math.log10(float(sound["waveform"].pow(2).mean().sqrt()))
    assert level == pytest.approx(full - 80, abs=0.2)  # the measured level, not a fixed text
    assert fake_comfy.texts == [(warning, "4")]  # shown on the node
    short = {"waveform": sound["waveform"][..., : sound["sample_rate"] // 5], "sample_rate": sound["sample_rate"]}
    out = run("SGIMEmbedAudio", nodes, audio_encoder=models.encoder, audio=short)
    assert "very short: 0.20 s" in out["ui"]["text"][0]


def test_root_imported_as_a_lone_module_registers_nothing_and_does_not_fail():
    """pytest imports the repository root this way when the checkout's folder name is not an identifier."""
    spec = importlib.util.spec_from_file_location("__init__", REPO / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.WEB_DIRECTORY == "./web"


def test_source_latent_class_input(nodes, models, errors, shared):
    load_generator = sys.modules[PACK_MODULE + ".sgim_nodes.stylegan"].load_generator
    cond = load_generator(shared / "fixtures" / "stylegan_more" / "tf_sg2_labelconcat_tiny.pkl")
    kwargs = dict(generator=cond, seed=4, truncation_psi=0.7, mode="random", batch_size=2)
    chosen, = run("SGIMSourceLatent", nodes, class_index=3, **kwargs)
    z = torch.randn(2, cond.z_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(chosen["ws"], cond.mapping(z, truncation_psi=0.7, c=torch.eye(5)[[3, 3]]))
    drawn, = run("SGIMSourceLatent", nodes, **kwargs)  # -1 (default): a random class per image from the seed
    assert drawn["ws"].shape == (2, 8, 64) and not torch.equal(drawn["ws"], chosen["ws"])
    with pytest.raises(errors.ParameterError, match=r"Source Latent, input 'class_index': class 5 is out of range.*"
                                                    r"5 classes \(0\.\.4\)"):
        run("SGIMSourceLatent", nodes, class_index=5, **kwargs)
    with pytest.raises(errors.ParameterError, match=r"Source Latent, input 'class_name': .*no class named 'cubism'.*"
                                                    r"carries no class names"):
        run("SGIMSourceLatent", nodes, class_name="cubism", **kwargs)
    with pytest.raises(errors.ParameterError, match=r"Source Latent, input 'class_index': generator '.*' is "
                                                    r"unconditional"):
        run("SGIMSourceLatent", nodes, **{**kwargs, "generator": models.generator}, class_index=0)
    with pytest.raises(errors.ParameterError, match=r"input 'class_index': a class is only used in 'random' mode"):
        run("SGIMSourceLatent", nodes, **{**kwargs, "mode": "mean"}, class_index=1)


# ------------------------------------------------------------------------------ bring your own picture

def test_project_image_node_projects_tunes_and_feeds_the_editor(nodes, models, comfy_base, fake_comfy):
    _, names = comfy_base
    g = models.generator
    lpips, = run("SGIMLoadVGG", nodes, vgg_name=names["vgg"])
    picture = torch.rand(1, 40, 56, 4)  # RGBA from Load Image; alpha is ignored
    before = snapshot([picture, g])
    wplus, tuned, projection, report = run(
        "SGIMProjectImage", nodes, image=picture, generator=g, distance="lpips", steps=6, tune_steps=4, fit="crop",
        space="wplus", lr=0.1, pixel_weight=1.0, optimize_noise="auto", init_seed=0, preview_every=5, lpips=lpips,
        unique_id="9")
    assert same(snapshot([picture, g]), before)  # the loaded generator is never modified
    assert tuned is not g and tuned.device == torch.device("cpu") and tuned.name.endswith("-tuned")
    assert wplus["ws"].shape == (1, 8, 64) and wplus["generator"] == tuned.name
    assert projection.shape == (1, 32, 32, 3) and 0 <= float(projection.min()) and float(projection.max()) <= 1
    log = json.loads(report)
    assert log["tuned"] and len(log["history"]) == 10 and [h["phase"] for h in log["history"]][-1] == "tune"
    assert [p[0] for p in fake_comfy.progress] == list(range(1, 11)) and fake_comfy.progress[0][1:] == (10, "9")
    assert len(fake_comfy.previews) == 3  # step 5, the end of the W+ phase, tuning's last step
    # the loss goes to the node's readout (web/sgim.js); the progress text only names each phase once
    assert [t for t, _ in fake_comfy.texts] == ["projecting (W)", "projecting (W+)", "tuning"]
    losses = [e[1] for e in fake_comfy.events if e[0] == "sgim.loss"]
    assert [d["step"] for d in losses] == list(range(1, 11)) and "tune loss" in losses[-1]["terms"]
    # the code and the tuned generator go on into the editor and the decoder
    text, = run("SGIMEmbedText", nodes, clip=models.clip, text="a storm")
    edited, _ = run("SGIMOptimizeLatent", nodes, generator=tuned, clip=models.clip, target=text, source=wplus,
                    steps=2, lr=0.1, lambda_sim=0.002, lambda_id=0.0, adaptive_mask=False, preview_every=0)
    image, = run("SGIMStyleGANDecode", nodes, generator=tuned, wplus=wplus, noise_mode="const")
    assert edited["ws"].shape == (1, 8, 64)
    assert torch.allclose(image, projection, atol=1e-5)


def test_project_image_node_without_tuning_returns_the_input_generator(nodes, models, fake_comfy):
    g = models.generator
    wplus, same_g, projection, report = run(
        "SGIMProjectImage", nodes, image=torch.rand(2, 8, 8, 3), generator=g, distance="multiscale", steps=3,
        tune_steps=0, optimize_noise="auto", preview_every=0, unique_id="4")
    assert same_g is g and wplus["ws"].shape == (2, 8, 64) and projection.shape == (2, 32, 32, 3)
    assert len(json.loads(report)["psnr_db"]) == 2


def test_project_image_node_errors_and_cancel(nodes, models, errors, fake_comfy):
    g = models.generator
    with pytest.raises(errors.ParameterError, match="Project Image, input 'lpips'.*Load VGG16"):
        run("SGIMProjectImage", nodes, image=torch.rand(1, 8, 8, 3), generator=g, distance="lpips", steps=3)
    with pytest.raises(errors.ParameterError, match="Project Image, input 'image'.*1 to 4 channels"):
        run("SGIMProjectImage", nodes, image=torch.rand(1, 8, 8, 6), generator=g, distance="pixel", steps=3)
    fake_comfy.interrupt_at = 3
    with pytest.raises(FakeInterrupt):
        run("SGIMProjectImage", nodes, image=torch.rand(1, 8, 8, 3), generator=g, distance="pixel", steps=500,
            tune_steps=0, preview_every=0, unique_id="2")
    assert len(fake_comfy.progress) == 2  # stopped within one step


def test_load_stylegan_names_a_missing_file_where_it_was_looked_for_and_how_to_get_it(nodes, comfy_base):
    base, names = comfy_base
    cls = nodes.NODE_CLASS_MAPPINGS["SGIMLoadStyleGAN"]
    assert cls.VALIDATE_INPUTS(generator_name=names["generator"]) is True
    message = cls.VALIDATE_INPUTS(generator_name="ffhq.pkl")  # a value outside the list reaches our check
    assert message.startswith("Load StyleGAN, input 'generator_name': model file 'ffhq.pkl' not found in the "
                              "'stylegan' model folders (")
    assert str(base / "models" / "stylegan") in message and "download ffhq`" in message
    assert "download" not in nodes.NODE_CLASS_MAPPINGS["SGIMLoadCLIP"].VALIDATE_INPUTS(clip_name="mine.bin")


def test_embed_image_combine_mean_gives_one_target_for_a_batch(nodes, models):
    frames = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    each, = run("SGIMEmbedImage", nodes, clip=models.clip, image=frames)
    mean, = run("SGIMEmbedImage", nodes, clip=models.clip, image=frames, combine="mean")
    assert each.vectors.shape[0] == 3 and mean.vectors.shape[0] == 1
    expected = torch.nn.functional.normalize(each.vectors[:, 0].mean(0), dim=-1)
    assert torch.allclose(mean.vectors[0, 0], expected, atol=1e-5)
