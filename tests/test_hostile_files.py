"""Hostile files and extreme values: every one is refused with a clear error in bounded time and memory.

Each hostile file is built here, at test time, mostly in a few kilobytes (no fixtures committed). The
loads that used to hang or eat gigabytes run in a separate interpreter that reports, per load, its
wall time and the growth of its peak resident memory (VmHWM, reset before each load); that interpreter
also has an address-space limit, so a regression fails the test instead of taking the machine down.
Budgets asserted: ``LOAD_SECONDS`` and ``LOAD_PEAK_BYTES`` (the limits themselves live in
``sgim_nodes/limits.py``). The other cases are checked on the surface where they were found: the
library, the command line (exit code 1 and one ``error:`` line) and the node functions (the error
names the node input), with nothing written for the NaN cases.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import math
import pickle
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LOAD_SECONDS = 10.0  # wall time of one refused load (typically well under a second)
LOAD_PEAK_BYTES = 300 * 2 ** 20  # growth of peak RSS during one refused load
ADDRESS_SPACE_LIMIT = 8 * 2 ** 30  # the subprocess cannot map more than this (torch alone maps ~3.3 GB)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ pickle assembly
# Hand-assembled pickle opcodes: exact control over sharing and nesting, and no stand-in modules.

def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _dict(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"}" + (b"(" + b"".join(k + v for k, v in items) + b"u" if items else b"")  # EMPTY_DICT MARK .. SETITEMS


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _persistent_record(class_name: str, state: bytes) -> bytes:
    """``torch_utils.persistence._reconstruct_persistent_obj({"class_name": ..., "state": ...})``."""
    meta = _dict([(_text("class_name"), _text(class_name)), (_text("state"), state)])
    return _global("torch_utils.persistence", "_reconstruct_persistent_obj") + meta + b"\x85R"  # TUPLE1 REDUCE


def _put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)  # LONG_BINPUT


def _get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)  # LONG_BINGET


def billion_laughs_pickle(width: int = 30, depth: int = 8) -> bytes:
    """G_ema whose every record lists the record below it ``width`` times: width**depth module paths."""
    out = b"\x80\x02" + _persistent_record("Leaf", _dict([(_text("_modules"), b"}")])) + _put(0) + b"0"
    for level in range(1, depth + 1):
        children = _dict([(_text(f"m{i}"), _get(level - 1)) for i in range(width)])
        name = "Generator" if level == depth else "Block"
        out += _persistent_record(name, _dict([(_text("_modules"), children)])) + _put(level)
        out += b"." if level == depth else b"0"  # STOP / POP
    return out


def deep_chain_pickle(depth: int = 20_000) -> bytes:
    """G_ema -> m -> m -> ... ``depth`` records deep, written outside-in (the global is memoised once)."""
    record = _global("torch_utils.persistence", "_reconstruct_persistent_obj")
    opening = b"}(" + _text("class_name") + _text("Generator") + _text("state") + b"}(" + _text("_modules") \
        + b"}(" + _text("m")
    closing = b"uuu\x85R"  # close _modules, state, meta; build the record
    leaf = _persistent_record("Leaf", _dict([(_text("_modules"), b"}")]))
    return (b"\x80\x02" + record + b"q\x00" + opening + (b"h\x00" + opening) * (depth - 1) + leaf
            + closing * depth + b".")


def legacy_storage_stream(numel: int) -> bytes:
    """A legacy ``torch.save`` stream of one float storage that declares ``numel`` elements and holds none."""
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001,
                   {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buf, protocol=2)

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel, None) if obj == "STORAGE" else None

    _Pickler(buf, protocol=2).dump("STORAGE")
    pickle.dump(["0"], buf, protocol=2)
    buf.write(struct.pack("<q", numel))
    return buf.getvalue()


def unfilled_storage_pickle(numel: int = 1_600_000_000) -> bytes:
    """An NVlabs G_ema whose one parameter is a storage declaring ``numel`` floats it never provides."""
    data = legacy_storage_stream(numel)
    tensor = (_global("torch._utils", "_rebuild_tensor_v2") + b"("
              + _global("torch.storage", "_load_from_bytes") + b"(B" + struct.pack("<I", len(data)) + data + b"tR"
              + b"K\x00" + b"J" + struct.pack("<i", numel) + b"\x85" + b"K\x01\x85" + b"\x89"
              + _global("collections", "OrderedDict") + b")R" + b"tR")
    state = _dict([(_text("_parameters"), _dict([(_text("w"), tensor)])), (_text("_modules"), b"}")])
    return b"\x80\x03" + _persistent_record("Generator", state) + b"."


# ------------------------------------------------------------------------------------ zip assembly

def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip of (name, stored bytes, method, declared uncompressed size, crc) members, headers as written."""
    out, central = io.BytesIO(), b""
    for name, data, method, size, crc in members:
        offset = out.tell()
        raw = name.encode()
        out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0))
        out.write(raw + data)
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data), size,
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    start = out.tell()
    out.write(central + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                                    start, 0))
    return out.getvalue()


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, len(data), zlib.crc32(data)


def deflated_zeros(mebibytes: int) -> bytes:
    """A raw deflate stream of ``mebibytes`` MiB of zeros, about 1 KB per MiB: one fully flushed block
    repeated (a full flush resets the window, so every block after the first is the same bytes)."""
    chunk = bytes(2 ** 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeated = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + repeated * (mebibytes - 1) + compressor.flush(zlib.Z_FINISH)


def torch_data_pickle(numel: int, torchscript: bool) -> bytes:
    """``data.pkl`` of a torch zip: ``{"w": tensor}`` (or a TorchScript module holding it) over storage 0."""
    class Marker:
        pass

    marker = Marker()

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is marker else None

    buf = io.BytesIO()
    rebuild = torch._utils._rebuild_tensor_v2
    tensor = _Reduce(rebuild, (marker, 0, (numel,), (1,), False, _Reduce(collections.OrderedDict, ())))
    _Pickler(buf, protocol=2).dump({"w": tensor})
    data = buf.getvalue()
    if torchscript:  # the TorchScript spelling of a module: __torch__ object, NEWOBJ, BUILD with its attributes
        data = data[:2] + _global("__torch__", "Model") + b")\x81" + data[2:-1] + b"b."
    return data


class _Reduce:
    """Pickles as ``func(*args)`` without importing anything special."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def zip_bomb(path: Path, torchscript: bool, mebibytes: int = 4095) -> Path:
    """A torch zip (or TorchScript archive) of a few MB whose tensor member inflates to ``mebibytes`` MiB."""
    numel = mebibytes * 2 ** 20 // 4
    members = [_stored("archive/data.pkl", torch_data_pickle(numel, torchscript)),
               _stored("archive/version", b"3\n"),
               # The CRC of the inflated data is never reached: the member is refused from its header.
               ("archive/data/0", deflated_zeros(mebibytes), zipfile.ZIP_DEFLATED, mebibytes * 2 ** 20, 0)]
    if torchscript:
        members.append(_stored("archive/constants.pkl", pickle.dumps((), protocol=2)))
        members.append(_stored("archive/code/__torch__/model.py", b"class Model(Module):\n  pass\n"))
    path.write_bytes(_zip(members))
    return path


def torchscript_billion_laughs(path: Path, width: int = 30, depth: int = 8) -> Path:
    """A TorchScript archive whose module tree shares each level ``width`` times, ``depth`` levels deep."""
    new_object = _global("__torch__", "M") + b")\x81"  # EMPTY_TUPLE NEWOBJ
    out = b"\x80\x02" + new_object + b"}b" + _put(0) + b"0"  # an empty module
    for level in range(1, depth + 1):
        out += new_object + _dict([(_text(f"m{i}"), _get(level - 1)) for i in range(width)]) + b"b" + _put(level)
        out += b"." if level == depth else b"0"
    path.write_bytes(_zip([_stored("archive/data.pkl", out), _stored("archive/constants.pkl", pickle.dumps(()))]))
    return path


@functools.lru_cache(maxsize=1)
def _tiny_openai_clip_state() -> dict:
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import tempfile

    from tiny_models import save_tiny_clip

    with tempfile.TemporaryDirectory() as folder:
        save_tiny_clip(Path(folder) / "clip.pt")
        return torch.load(Path(folder) / "clip.pt", weights_only=True)


def clip_claiming_a_wide_text_tower(path: Path) -> Path:
    """A tiny OpenAI-layout CLIP whose ``ln_final.weight`` says the text tower is 8192 wide: the builder
    takes widths from such tensors, so unchecked it would allocate gigabytes before any shape check."""
    torch.save({**_tiny_openai_clip_state(), "ln_final.weight": torch.ones(8192)}, path)
    return path


def clip_with_a_thousand_blocks(path: Path) -> Path:
    extra = {f"transformer.resblocks.{i}.ln_1.weight": torch.ones(1) for i in range(1000)}
    torch.save({**_tiny_openai_clip_state(), **extra}, path)
    return path


# ------------------------------------------------------------------------------------ bounded runs
# All the loads run in one fresh interpreter (importing torch and open_clip once), one after the other;
# before each, the peak-RSS mark is reset (``/proc/self/clear_refs`` 5), so each load's peak growth is
# its own. An address-space limit on the interpreter turns a regression into a failure, not a swap storm.

RUNNER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from sgim_nodes.audio import load_audio_encoder
    from sgim_nodes.clip import load_clip
    from sgim_nodes.stylegan import load_generator

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    import open_clip  # imported by load_clip on first use: not part of any load's figures

    from sgim_nodes.animate.stream import iter_samples, probe
    from sgim_nodes.audio.decode import load_audio
    from sgim_nodes.latents import load_wplus
    from sgim_nodes.pictures import read_picture
    from sgim_nodes.project.distance import load_vgg16_features
    from sgim_nodes.train.loop import load_checkpoint

    for name, call in json.loads(sys.argv[1]):
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark to the current RSS
        before, start = status("VmRSS"), time.perf_counter()
        try:
            result = eval(call)
            outcome = {"error": None, "result": repr(result)[:300]}
        except BaseException as exc:
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        outcome.update(seconds=time.perf_counter() - start, peak_growth=status("VmHWM") - before)
        print("OUTCOME " + json.dumps([name, outcome]), flush=True)
""")


def _limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


# name -> (write the hostile file at this path, the call that loads it)
HOSTILE_LOADS = {
    "billion-laughs": (lambda p: p.write_bytes(billion_laughs_pickle()), "load_generator"),
    "20000-deep": (lambda p: p.write_bytes(deep_chain_pickle()), "load_generator"),
    "unfilled-storage": (lambda p: p.write_bytes(unfilled_storage_pickle()), "load_generator"),
    "zip-bomb-torch": (lambda p: zip_bomb(p, torchscript=False), "load_generator"),
    "zip-bomb-torchscript": (lambda p: zip_bomb(p, torchscript=True), "load_clip"),
    "torchscript-laughs": (torchscript_billion_laughs, "load_clip"),
    "storage-beyond-member": (lambda p: p.write_bytes(_zip([
        _stored("archive/data.pkl", torch_data_pickle(400_000_000, False)), _stored("archive/version", b"3\n"),
        _stored("archive/data/0", bytes(16))])), "load_generator"),
    "clip-wide-claim": (clip_claiming_a_wide_text_tower, "load_clip"),
    "clip-many-blocks": (clip_with_a_thousand_blocks, "load_clip"),
    "encoder-embed-dim": (lambda p: encoder_safetensors(p, {"backbone": "resnet18", "embed_dim": 2_000_000_000}),
                          "load_audio_encoder"),
    "config-resolution": (lambda p: generator_safetensors(p, {"resolution": 1073741824}, {"x": torch.zeros(1)}),
                          "load_generator"),
}


@pytest.fixture(scope="module")
def hostile_outcomes(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{name: (file, outcome)} for every entry of HOSTILE_LOADS, each load bounded as described above."""
    folder = tmp_path_factory.mktemp("hostile")
    paths, calls = {}, []
    for name, (write, loader) in HOSTILE_LOADS.items():
        path = folder / (name + (".safetensors" if name.startswith(("config", "encoder")) else ".pt"))
        write(path)
        paths[name] = path
        calls.append([name, f"{loader}({str(path)!r})"])
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(calls)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, preexec_fn=_limit_address_space)
    outcomes = dict(json.loads(line[len("OUTCOME "):]) for line in done.stdout.splitlines()
                    if line.startswith("OUTCOME "))
    assert set(outcomes) == set(HOSTILE_LOADS), f"exit {done.returncode}: {done.stderr[-3000:]}"
    return {name: (paths[name], outcomes[name]) for name in HOSTILE_LOADS}


@pytest.mark.parametrize("name, size_limit, expected", [
    ("billion-laughs", 5_000, "module records"),
    ("20000-deep", 1_500_000, "levels of nesting"),
    ("unfilled-storage", 500, "declares 6,400,000,008 bytes of tensor data but holds only 8"),
    ("zip-bomb-torch", 6 * 2 ** 20, "would inflate from"),
    ("zip-bomb-torchscript", 6 * 2 ** 20, "would inflate from"),
    ("torchscript-laughs", 5_000, "module records"),
    ("storage-beyond-member", 1_000, "storage 0 declares 1,600,000,000 bytes but its archive member holds 16"),
    ("config-resolution", 300, "resolution: expected a power of two from 4 to 4096, got 1073741824"),
    ("encoder-embed-dim", 400, "embed_dim: expected an embedding width from 1 to 4096, got 2000000000"),
    ("clip-wide-claim", 16 * 2 ** 20, "do not fit the CLIP architecture they imply (size mismatch for positional_embedding"),
    ("clip-many-blocks", 16 * 2 ** 20, "1000 blocks in one tower, beyond the 128"),
])
def test_hostile_file_refused_in_bounded_time_and_memory(hostile_outcomes, name, size_limit, expected):
    path, outcome = hostile_outcomes[name]
    assert path.stat().st_size < size_limit  # a tiny file ...
    assert outcome["error"] == "ModelFileError", outcome  # ... refused with the documented error
    assert str(path) in outcome["message"] and expected in outcome["message"], outcome["message"]
    assert outcome["seconds"] < LOAD_SECONDS, outcome
    assert outcome["peak_growth"] < LOAD_PEAK_BYTES, outcome
    if name.startswith("zip-bomb"):
        assert "4,293,918,720 bytes" in outcome["message"]  # what it would have inflated to


def test_real_files_pass_the_budgets(fixtures_dir, tmp_path):
    """The budgets refuse nothing real: both reference generators load, and so does the rosinality one
    re-saved in torch's legacy (non-zip) format."""
    from sgim_nodes.stylegan import load_generator

    for name in ("rosinality_tiny.pt", "nvlabs_tiny.pkl"):
        assert load_generator(fixtures_dir / "stylegan2" / name).num_ws > 0
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(fixtures_dir / "stylegan2" / "rosinality_tiny.pt", weights_only=True), legacy,
               _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    assert load_generator(legacy).num_ws == load_generator(fixtures_dir / "stylegan2" / "rosinality_tiny.pt").num_ws


# ------------------------------------------------------------------------------------ generator configs

def _tiny_config():
    from sgim_nodes.stylegan import GeneratorConfig

    return GeneratorConfig(resolution=8, z_dim=8, w_dim=8, n_mapping=1, channels={4: 4, 8: 4})


def generator_safetensors(path: Path, config: dict, tensors: dict | None = None) -> Path:
    """Our generator format with a chosen config in the metadata (the writer itself would not write it)."""
    from safetensors.torch import save_file

    from sgim_nodes.stylegan import Generator

    if tensors is None:
        tensors = {k: v.float().contiguous() for k, v in Generator(_tiny_config()).state_dict().items()}
    save_file(tensors, str(path), metadata={"sgim_kind": "stylegan2_generator", "sgim_format": "1",
                                            "config": config if isinstance(config, str) else json.dumps(config)})
    return path


def encoder_safetensors(path: Path, config: dict) -> Path:
    """Our audio-encoder format with a chosen config in the metadata and one tiny tensor."""
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(3, 1, 3, 3)}, str(path),
              metadata={"sgim_kind": "audio_encoder", "sgim_format": "1", "config": json.dumps(config)})
    return path


@pytest.mark.parametrize("preprocessing, expected", [
    ({"frames": 10 ** 9}, "frames: expected an integer from 1 to 100000, got 1000000000"),
    ({"n_mels": "x"}, "n_mels: expected an integer from 1 to 1024, got 'x'"),
    ({"rolloff": 0}, "rolloff: expected a number in (0, 1], got 0"),
    ("flat", "preprocessing: expected a JSON object"),
])
def test_encoder_preprocessing_config_refused(tmp_path, preprocessing, expected):
    from sgim_nodes.audio import load_audio_encoder
    from sgim_nodes.errors import ModelFileError

    path = encoder_safetensors(tmp_path / "enc.safetensors", {"backbone": "resnet18", "embed_dim": 16,
                                                               "preprocessing": preprocessing})
    with pytest.raises(ModelFileError) as info:
        load_audio_encoder(path)
    assert str(path) in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize("change, expected", [
    ({"channels": {"4": -1, "8": 4}}, "channels: expected channel counts from 1 to 4096, got -1"),
    ({"blur_kernel": [0, 0]}, "blur_kernel: the taps [0, 0] sum to 0"),
    ({"conv_clamp": "x"}, "conv_clamp: expected null or a positive number"),
    ({"resolution": True}, "resolution: expected a power of two"),
    ({"z_dim": 8.5}, "z_dim: expected an integer from 1 to 4096, got 8.5"),
    ({"n_mapping": 10 ** 9}, "n_mapping: expected a number of mapping layers from 1 to 32"),
    ({"resolution": 16, "channels": {"4": 4, "8": 4, "16": 4}}, "the tensors do not match the generator config"),
    ({"channels": {"4": 4, "8": 5}}, "the config needs [5, 4, 3, 3]"),
])
def test_inconsistent_configs_refused_with_the_field_named(tmp_path, change, expected):
    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.stylegan import load_generator

    config = {**_tiny_config().to_dict(), **change}
    path = generator_safetensors(tmp_path / "g.safetensors", config)
    with pytest.raises(ModelFileError) as info:
        load_generator(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_valid_config_still_loads(tmp_path):
    from sgim_nodes.stylegan import load_generator

    generator = load_generator(generator_safetensors(tmp_path / "g.safetensors", _tiny_config().to_dict()))
    assert generator.num_ws == 4 and torch.isfinite(generator.synthesis(generator.w_avg.expand(1, 4, 8))).all()


# ------------------------------------------------------------------------------------ torch's advice

def test_torch_advice_to_disable_weights_only_never_repeated(tmp_path):
    """Every reader that passes on torch's refusal drops its advice to load with weights_only=False."""
    from sgim_nodes.audio import load_audio_encoder
    from sgim_nodes.clip import load_clip
    from sgim_nodes.errors import SGIMError
    from sgim_nodes.stylegan import load_generator
    from sgim_nodes.train.loop import load_checkpoint

    path = tmp_path / "code.pt"
    torch.save({"x": _Reduce(print, ("hello",))}, path)
    for load in (load_generator, load_audio_encoder, load_clip, lambda p: load_checkpoint(Path(p))):
        with pytest.raises(SGIMError) as info:
            load(path)
        message = str(info.value)
        assert "weights_only" not in message and "trust" not in message, message
        assert "GLOBAL print was not an allowed global" in message, message  # the reason itself is kept


# ------------------------------------------------------------------------------------ silent NaN

def _wplus_file(path: Path, ws: torch.Tensor, config=None) -> Path:
    from safetensors.torch import save_file

    save_file({"ws": ws}, str(path), metadata={"sgim_kind": "wplus_latent", "sgim_format": "1",
                                               "config": json.dumps({"generator": "tiny16"} if config is None
                                                                    else config)})
    return path


@pytest.mark.parametrize("value, expected", [(1e30, "reaches 1e+30"), (float("nan"), "NaN or infinite")])
def test_wplus_files_beyond_range_refused(tmp_path, value, expected):
    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.latents import load_wplus

    path = _wplus_file(tmp_path / "w.safetensors", torch.full((1, 6, 32), value))
    with pytest.raises(ModelFileError) as info:
        load_wplus(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_nothing_non_finite_is_written(tmp_path):
    from sgim_nodes.errors import NonFiniteError
    from sgim_nodes.fileio import save_model_file
    from sgim_nodes.latents import save_wplus

    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        save_wplus(tmp_path / "w.safetensors", torch.full((1, 6, 32), float("nan")))
    with pytest.raises(NonFiniteError, match="refused to write 'embedding'"):
        save_model_file(tmp_path / "e.safetensors", {"embedding": torch.tensor([[float("inf")]])}, "embedding", {})
    assert list(tmp_path.iterdir()) == []


def test_huge_audio_samples_refused(audio_dir):
    from sgim_nodes.audio import build_audio_encoder, embed_audio
    from sgim_nodes.errors import AudioError

    torch.manual_seed(0)
    encoder = build_audio_encoder(embed_dim=16).eval()
    for scale in (1e20, 3e38):
        with pytest.raises(AudioError, match=r"samples reach .* rescale it"):
            embed_audio(encoder, torch.full((1, 4410), 0.5) * scale, 44100)


def test_infinite_audio_times_refused(audio_dir):
    from sgim_nodes.audio import build_audio_encoder, embed_audio
    from sgim_nodes.errors import ParameterError

    torch.manual_seed(0)
    encoder = build_audio_encoder(embed_dim=16).eval()
    for option in ("hop_seconds", "start_seconds", "end_seconds"):
        with pytest.raises(ParameterError, match=f"{option}: expected a .*finite number of seconds, got inf"):
            embed_audio(encoder, torch.zeros(1, 4410), 44100, **{option: float("inf")})


def test_audio_encoder_with_a_nan_weight_named(tmp_path):
    from sgim_nodes.audio import build_audio_encoder, load_audio_encoder
    from sgim_nodes.errors import ModelFileError

    torch.manual_seed(0)
    state = build_audio_encoder(embed_dim=16).state_dict()
    state["feature_extractor.fc.weight"][0, 0] = float("nan")
    path = tmp_path / "enc.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError) as info:
        load_audio_encoder(path)
    assert str(path) in str(info.value) and "'feature_extractor.fc.weight' contains NaN" in str(info.value)


def test_clip_with_a_nan_weight_named(tmp_path):
    from sgim_nodes.clip import load_clip
    from sgim_nodes.errors import ModelFileError

    path = tmp_path / "clip.pt"
    state = dict(_tiny_openai_clip_state())
    state["ln_final.weight"] = state["ln_final.weight"].clone()
    state["ln_final.weight"][0] = float("nan")
    torch.save(state, path)
    with pytest.raises(ModelFileError) as info:
        load_clip(path)
    assert str(path) in str(info.value) and "CLIP tensor 'ln_final.weight' contains NaN" in str(info.value)


def test_target_weights_and_huge_targets():
    from sgim_nodes.errors import ParameterError
    from sgim_nodes.optimize.objective import combine_targets

    torch.manual_seed(0)
    targets = torch.randn(1, 2, 8)
    for weights in ([-1.0, 1.0], [0.0, 0.0]):
        with pytest.raises(ParameterError, match="target_weights: (weights must be finite and >= 0|at least one "
                                                 "weight must be above 0)"):
            combine_targets(targets, torch.tensor(weights))
    vector, offset = combine_targets(targets, torch.tensor([0.25, 0.75]))
    huge_vector, huge_offset = combine_targets(targets * 1e38, torch.tensor([0.25, 0.75]))  # finite float32
    assert torch.isfinite(targets * 1e38).all()
    assert torch.allclose(vector, huge_vector, atol=1e-6) and torch.equal(offset, huge_offset)
    assert vector.norm() > 0.1


@pytest.fixture(scope="module")
def tiny_generator():
    from sgim_nodes.stylegan import Generator

    torch.manual_seed(0)
    return Generator(_tiny_config()).requires_grad_(False)


@pytest.fixture(scope="module")
def tiny_clip():
    from sgim_nodes.clip import ClipModel, build_tiny_clip

    return ClipModel(build_tiny_clip(), "sgim-tiny-clip", tokenizer=None)


def test_lr_beyond_range_refused(tiny_generator, tiny_clip):
    from sgim_nodes.errors import ParameterError
    from sgim_nodes.optimize import optimize_latent

    with pytest.raises(ParameterError, match=r"lr: expected a learning rate up to 100") as info:
        optimize_latent(tiny_generator, tiny_clip, torch.randn(1, 32), "random", steps=2, lr=1e30)
    assert info.value.parameter == "lr"
    with pytest.raises(ParameterError, match="steps: expected a number of steps from 1 to 1000000"):
        optimize_latent(tiny_generator, tiny_clip, torch.randn(1, 32), "random", steps=10 ** 9)


@pytest.mark.parametrize("with_callback", [True, False])
def test_run_going_non_finite_stops_with_advice(tiny_generator, tiny_clip, with_callback):
    """A generator file with huge (finite) weights overflows inside synthesis: the run stops with a clear
    error instead of returning NaN codes."""
    import copy

    from sgim_nodes.errors import NonFiniteError
    from sgim_nodes.optimize import optimize_latent

    overflowing = copy.deepcopy(tiny_generator)
    overflowing.synthesis_network.torgbs[-1].weight.mul_(1e38)
    seen = []
    with pytest.raises(NonFiniteError) as info:
        optimize_latent(overflowing, tiny_clip, torch.randn(1, 32), "random", steps=20, lr=0.1,
                        callback=seen.append if with_callback else None)
    assert "the optimisation went non-finite" in str(info.value) and "Lower lr (now 0.1)" in str(info.value)
    assert seen == []  # stopped at the first step, before handing anything on


def test_loss_history_grows_with_the_run():
    from sgim_nodes.optimize.loop import _LossHistory

    history = _LossHistory(steps=10 ** 6, batch=2, device=torch.device("cpu"))
    for step in range(1500):
        history.row(step).fill_(step)
    assert len(history.blocks) == 2 and history.tensor().shape == (2048, 4, 2)
    assert history.tensor()[1499, 0, 0] == 1499


# ------------------------------------------------------------------------------------ command line

def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from sgim_nodes.__main__ import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err: str) -> str:
    """The error a command printed: one line after its ``[sgim]`` status lines, no traceback."""
    lines = [line for line in err.splitlines() if not line.startswith("[sgim] ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("extra, expected", [
    (["--seed", "99999999999999999999999"], "--seed: expected a seed from 0 to 18446744073709551615"),
    (["--batch", "-3"], "--batch: expected a batch size from 1 to 4096, got -3"),
    (["--steps", "1000000000"], "--steps: expected a number of steps from 1 to 1000000"),
    (["--lr", "1e30"], "--lr: expected a learning rate in [0.0001, 100]"),
    (["--device", "cuda:7"], "device: 'cuda:7'"),
    (["--device", "mps"], "device: 'mps' asks for Apple MPS"),
])
def test_edit_arguments_refused_in_one_line_before_any_work(tmp_path, capsys, extra, expected):
    if extra[-1] == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if extra[-1] == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    code, err = _cli(["edit", "--text", "rain", "--out", str(tmp_path / "x.png"), *extra], capsys)
    assert code == 1 and expected in _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_edit_device_cuda_without_a_gpu(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, err = _cli(["edit", "--text", "rain", "--out", str(tmp_path / "x.png"), "--device", "cuda"], capsys)
    assert code == 1 and "no CUDA GPU is available here" in _one_line(err)


def test_edit_refuses_a_huge_source_latent_and_writes_nothing(tmp_path, capsys):
    latent = _wplus_file(tmp_path / "huge.safetensors", torch.full((1, 6, 32), 1e30))
    code, err = _cli(["edit", "--text", "rain", "--out", str(tmp_path / "x.png"), "--source-latent", str(latent)],
                     capsys)
    assert code == 1 and f"{latent}: the W+ code reaches 1e+30" in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.safetensors"]


def test_out_naming_a_folder_refused_before_the_work(tmp_path, capsys):
    folder = tmp_path / "result.png"
    folder.mkdir()
    code, err = _cli(["edit", "--text", "rain", "--out", str(folder)], capsys)
    assert code == 1 and "is an existing folder" in _one_line(err)
    code, err = _cli(["embed-audio", str(tmp_path / "any.wav"), "--encoder", "e.safetensors", "--out", str(folder)],
                     capsys)
    assert code == 1 and "--out" in _one_line(err) and "existing folder" in err


def test_explicit_generator_path_never_falls_back_to_the_model_folder(tmp_path, capsys, monkeypatch):
    from sgim_nodes.models import find_model_file

    models = tmp_path / "models"
    (models / "stylegan").mkdir(parents=True)
    (models / "stylegan" / "model.pt").write_bytes(b"x")
    monkeypatch.setenv("SGIM_MODELS_DIR", str(models))
    assert find_model_file("stylegan", "/no/such/place/model.pt") is None
    assert find_model_file("stylegan", "model.pt") == models / "stylegan" / "model.pt"  # bare names still work
    assert find_model_file("stylegan", "..") is None and find_model_file("stylegan", "../stylegan/model.pt") is None
    code, err = _cli(["edit", "--text", "rain", "--out", str(tmp_path / "x.png"),
                      "--generator", "/no/such/place/model.pt"], capsys)
    assert code == 1 and "--generator: file not found: /no/such/place/model.pt" in _one_line(err)


def _float_wav(path: Path, samples, rate: int) -> Path:
    """A 32-bit float WAV (format 3) written byte by byte, so any rate and any value can be declared."""
    import numpy as np

    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_wav_with_an_absurd_sample_rate(tmp_path, capsys):
    from sgim_nodes.audio import load_audio
    from sgim_nodes.errors import AudioError

    path = _float_wav(tmp_path / "fast.wav", [0.1] * 4000, 30_000_000)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(path) in str(info.value) and "from 1 to 768,000, got 30000000" in str(info.value)
    from sgim_nodes.audio import build_audio_encoder, save_audio_encoder

    save_audio_encoder(build_audio_encoder(embed_dim=16), tmp_path / "enc.safetensors")
    code, err = _cli(["embed-audio", str(path), "--encoder", str(tmp_path / "enc.safetensors")], capsys)
    assert code == 1 and "768,000" in _one_line(err)


def test_embed_audio_never_saves_a_nan_embedding(tmp_path, capsys):
    from sgim_nodes.audio import build_audio_encoder, save_audio_encoder

    torch.manual_seed(0)
    save_audio_encoder(build_audio_encoder(embed_dim=16), tmp_path / "enc.safetensors")
    wav = _float_wav(tmp_path / "loud.wav", [3e38, -3e38] * 2000, 16000)
    out = tmp_path / "embedding.safetensors"
    code, err = _cli(["embed-audio", str(wav), "--encoder", str(tmp_path / "enc.safetensors"), "--out", str(out),
                      "--device", "cpu"], capsys)
    assert code == 1 and "samples reach 3e+38" in _one_line(err)
    assert not out.exists()


# ------------------------------------------------------------------------------------ training resume

def _train(tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    return _cli(["train", "--data", str(tmp_path / "no_such_data"), "--clip", "clip.safetensors",
                 "--out", str(tmp_path / "enc.safetensors"), "--device", "cpu", "--no-progress", *extra], capsys)


def test_failed_training_leaves_no_empty_run_folder(tmp_path, capsys):
    code, err = _train(tmp_path, capsys)
    assert code == 1 and err.startswith("error: ")
    assert not (tmp_path / "enc_run").exists()


def test_resume_into_a_folder_named_checkpoint(tmp_path, capsys):
    (tmp_path / "enc_run" / "checkpoint.pt").mkdir(parents=True)
    code, err = _train(tmp_path, capsys, "--resume")
    assert code == 1 and "checkpoint.pt: is a folder, not a training checkpoint" in _one_line(err)
    code, err = _train(tmp_path, capsys, "--out", str(tmp_path / "enc_run"))
    assert code == 1 and "is an existing folder" in _one_line(err)


@pytest.mark.parametrize("payload, expected", [
    ({"foo": 1}, "missing ['model', 'optimizer'"),
    ([1, 2], "it holds a list"),
    ("no optimizer", "missing ['optimizer']"),
    ("wrong types", "wrong type for ['step', 'seed']"),
])
def test_wrong_resume_checkpoints_named(tmp_path, payload, expected):
    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.train.loop import CHECKPOINT_FIELDS, load_checkpoint

    full = {"model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {}, "epoch": 0, "batch_in_epoch": 0,
            "step": 1, "global_batch": 2, "seed": 0, "dataset_size": 4, "bad_indices": torch.zeros(0),
            "bad_paths": "[]"}
    assert set(full) == set(CHECKPOINT_FIELDS)
    if payload == "no optimizer":
        payload = {k: v for k, v in full.items() if k != "optimizer"}
    elif payload == "wrong types":
        payload = {**full, "step": "1", "seed": True}
    path = tmp_path / "checkpoint.pt"
    torch.save(payload, path)
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    torch.save(full, path)
    assert load_checkpoint(path)["step"] == 1


# ------------------------------------------------------------------------------------ nodes
# The node functions called directly, as ComfyUI calls them (see tests/test_nodes.py for the set-up).

from test_nodes import comfy_base, models, nodes, pack, run  # noqa: E402,F401  (pytest fixtures)


def _wplus(ws: torch.Tensor, name: str = "tiny16") -> dict:
    return {"ws": ws, "generator": name}


def _node_error(node_id: str, nodes, **inputs) -> str:
    """The message of the SGIMError a node raises (the pack's own copy of the class, as in ComfyUI)."""
    with pytest.raises(Exception) as info:
        run(node_id, nodes, **inputs)
    assert "SGIMError" in [c.__name__ for c in type(info.value).__mro__], repr(info.value)
    return str(info.value)


def test_nodes_refuse_nan_and_huge_codes(nodes, models, comfy_base, tmp_path):
    base, _ = comfy_base
    good = run("SGIMSourceLatent", nodes, generator=models.generator16, seed=1)[0]
    nan = _wplus(torch.full_like(good["ws"], float("nan")))
    huge = _wplus(torch.full_like(good["ws"], 1e30))
    message = _node_error("SGIMStyleGANDecode", nodes, generator=models.generator16, wplus=nan)
    assert "StyleGAN Decode, input 'wplus'" in message and "NaN" in message
    message = _node_error("SGIMStyleMix", nodes, wplus_a=good, wplus_b=huge)
    assert "Style Mix, input 'wplus_b'" in message and "reaches 1e+30" in message
    message = _node_error("SGIMStyleMix", nodes, wplus_a=nan, wplus_b=good)
    assert "Style Mix, input 'wplus_a'" in message
    before = sorted((base / "output").rglob("*"))
    message = _node_error("SGIMSaveWPlus", nodes, wplus=nan, filename_prefix="sgim/nan")
    assert "Save W+ Code, input 'wplus'" in message
    assert not list((base / "output").rglob("nan_*"))
    target = run("SGIMEmbedText", nodes, clip=models.clip, text="rain")[0]
    message = _node_error("SGIMOptimizeLatent", nodes, generator=models.generator16, clip=models.clip, target=target,
                          source=huge, steps=2)
    assert "Optimize Latent, input 'source'" in message and "reaches 1e+30" in message
    assert sorted((base / "output").rglob("*")) == before


def test_load_wplus_refuses_nan_files_and_names_outside_its_folders(nodes, comfy_base):
    base, _ = comfy_base
    (base / "input" / "sgim_wplus").mkdir(exist_ok=True)
    _wplus_file(base / "input" / "sgim_wplus" / "nan.safetensors", torch.full((1, 6, 32), float("nan")))
    message = _node_error("SGIMLoadWPlus", nodes, w_plus_file="nan.safetensors")
    assert "Load W+ Code, input 'w_plus_file'" in message and "NaN" in message
    outside = _wplus_file(base / "secret.safetensors", torch.zeros(1, 6, 32))
    for node_id, input_name in (("SGIMLoadWPlus", "w_plus_file"), ("SGIMLoadLatent", "latent_file")):
        for name in ("../secret.safetensors", f"{outside}", "../secret.safetensors [output]"):
            message = _node_error(node_id, nodes, **{input_name: name})
            assert f"input '{input_name}'" in message and "secret.safetensors" in message
            assert "not found" in message or "no such" in message.lower(), message


def test_source_latent_huge_seed_named(nodes, models):
    message = _node_error("SGIMSourceLatent", nodes, generator=models.generator16, seed=2 ** 70)
    assert "Source Latent, input 'seed'" in message and "from 0 to 18446744073709551615" in message


def test_embed_image_empty_batch_named(nodes, models):
    message = _node_error("SGIMEmbedImage", nodes, clip=models.clip, image=torch.zeros(0, 32, 32, 3))
    assert "Embed Image, input 'image'" in message and "non-empty" in message


def test_embed_audio_absurd_rate_and_loud_samples_named(nodes, models):
    quiet = torch.full((1, 1, 4000), 0.1)
    message = _node_error("SGIMEmbedAudio", nodes, audio_encoder=models.encoder,
                          audio={"waveform": quiet, "sample_rate": 30_000_000})
    assert "Embed Audio, input 'audio'" in message and "768,000" in message
    message = _node_error("SGIMEmbedAudio", nodes, audio_encoder=models.encoder,
                          audio={"waveform": quiet * 1e20, "sample_rate": 16000})
    assert "Embed Audio, input 'audio'" in message and "samples reach" in message


def test_save_latent_long_prefix_named(nodes, models, comfy_base):
    base, _ = comfy_base
    good = run("SGIMSourceLatent", nodes, generator=models.generator16, seed=1)[0]
    before = sorted((base / "output").rglob("*"))
    for prefix in ("x" * 300, "y" * 300 + "/latent"):
        message = _node_error("SGIMSaveWPlus", nodes, wplus=good, filename_prefix=prefix)
        assert "Save W+ Code, input 'filename_prefix'" in message and "keep it under 200" in message
    assert sorted((base / "output").rglob("*")) == before


def test_model_names_stay_inside_the_pack_folder_without_comfyui(nodes, monkeypatch):
    monkeypatch.setattr(nodes.host, "folder_paths", lambda: None)  # the glue lives in comfy_nodes/host.py
    assert (REPO / "README.md").is_file()  # what "../../README.md" would reach from models/stylegan
    with pytest.raises(Exception) as info:
        nodes.model_file_path("stylegan", "../../README.md", "Load StyleGAN", "generator_name")
    assert type(info.value).__name__ == "ModelFileError"
    assert "Load StyleGAN, input 'generator_name'" in str(info.value) and "not found" in str(info.value)


TRAIN_CLIP_NAME = "sgim-hostile-train-clip"


@pytest.fixture(scope="module")
def train_assets(tmp_path_factory):
    """A tiny CLIP (its own 40-d shape, so no other test's tiny CLIP file becomes ambiguous once training
    registers this config with open_clip) and a 4-class synthetic dataset."""
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config
    from sgim_nodes.train.synthetic import make_dataset

    root = tmp_path_factory.mktemp("train_assets")
    (root / f"{TRAIN_CLIP_NAME}.json").write_text(json.dumps(tiny_clip_config(40)))
    save_open_clip_state_dict(build_tiny_clip(40, seed=0, name=TRAIN_CLIP_NAME), root / "clip.safetensors")
    make_dataset(root / "synth", per_class=12, classes=4, seed=0)
    return root


def train_config(assets: Path, out: Path, **changes):
    from sgim_nodes.train.loop import TrainConfig

    return TrainConfig(**{**dict(data=str(assets / "synth"), split="train", clip=str(assets / "clip.safetensors"),
                                 clip_config=str(assets / f"{TRAIN_CLIP_NAME}.json"), clip_model=TRAIN_CLIP_NAME,
                                 features="compact", out=str(out), progress=False), **changes})


def test_resume_with_a_foreign_model_state(train_assets, tmp_path):
    """A checkpoint of the right form whose model state belongs to another network: named, not a raw
    state-dict error; the checkpoint is left as it was."""
    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.train.loop import train

    out = tmp_path / "enc.safetensors"
    torch.set_num_threads(1)
    train(train_config(train_assets, out, epochs=1, batch_size=12, max_steps=1, checkpoint_every=1))
    checkpoint = tmp_path / "enc_run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {"fc.weight": torch.zeros(2, 2)}
    torch.save(state, checkpoint)
    with pytest.raises(ModelFileError) as info:
        train(train_config(train_assets, out, epochs=1, batch_size=12, max_steps=2, checkpoint_every=1,
                           resume=True))
    assert f"{checkpoint}: cannot resume: the checkpoint does not fit this run's model" in str(info.value)
    assert torch.load(checkpoint, weights_only=True)["step"] == 1


# ==================================================================================== round 2
# Files that claim sizes instead of storing them, audio headers, downloads, pictures, wrong-kind values.
# The loads run in the bounded interpreter above, with the issue's budgets.

ROUND2_SECONDS = 20.0
ROUND2_PEAK_BYTES = 1_500 * 2 ** 20


def _run_bounded(calls: list[list[str]]) -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(calls)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, preexec_fn=_limit_address_space)
    outcomes = dict(json.loads(line[len("OUTCOME "):]) for line in done.stdout.splitlines()
                    if line.startswith("OUTCOME "))
    assert set(outcomes) == {name for name, _ in calls}, f"exit {done.returncode}: {done.stderr[-3000:]}"
    return outcomes


def _expanded(*shape: int) -> torch.Tensor:
    """A stride-0 view of one stored float that claims ``shape``: a few bytes in a file."""
    return torch.zeros(1).expand(*shape)


def _tiny_rosinality() -> dict:
    from sgim_nodes.stylegan import rosinality_checkpoint

    torch.manual_seed(0)
    return rosinality_checkpoint(_tiny_generator())


def _tiny_generator():
    from sgim_nodes.stylegan import Generator

    return Generator(_tiny_config())


def rosinality_with_a_view(path: Path) -> Path:
    checkpoint = _tiny_rosinality()
    checkpoint["g_ema"]["style.1.weight"] = _expanded(40_000, 40_000)  # 6.4 GB claimed
    torch.save(checkpoint, path)
    return path


def rosinality_with_a_shared_view(path: Path) -> Path:
    """Many names over one 1 MiB storage: each is a small view, together they claim 3 GiB."""
    checkpoint = _tiny_rosinality()
    block = torch.zeros(2 ** 18)
    checkpoint["g_ema"].update({f"noises.extra_{i}": block for i in range(3000)})
    torch.save(checkpoint, path)
    return path


def _nvlabs_record(class_name: str, parameters: dict, modules: dict | None = None):
    sys.path.insert(0, str(REPO / "tests"))
    from test_stylegan3 import _module

    return _module(class_name, {}, params=list(parameters.items()), modules=list((modules or {}).items()))


def nvlabs_with_a_view(path: Path) -> Path:
    from test_stylegan_files import write_nvlabs_pickle

    return write_nvlabs_pickle({"G_ema": _nvlabs_record("Generator", {"w": _expanded(40_000, 40_000)})}, path)


def nvlabs_sharing_one_tensor(path: Path) -> Path:
    """One 1 MiB tensor, stored once (the pickle memo), named by 3,000 module records."""
    from test_stylegan_files import write_nvlabs_pickle

    block = torch.zeros(2 ** 18)
    children = {f"m{i}": _nvlabs_record("Leaf", {"w": block}) for i in range(3000)}
    return write_nvlabs_pickle({"G_ema": _nvlabs_record("Generator", {}, children)}, path)


def nvlabs_stylegan3_with_a_view(path: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from test_stylegan3 import nvlabs_tree
    from test_stylegan_files import write_nvlabs_pickle

    from sgim_nodes.stylegan import StyleGAN3Config, StyleGAN3Generator

    torch.manual_seed(0)
    tree = nvlabs_tree(StyleGAN3Generator(StyleGAN3Config(resolution=16, z_dim=8, w_dim=8, channel_base=64,
                                                          channel_max=8, num_layers=2, num_critical=1)))
    mapping = tree["G_ema"].args[0]["state"]["_modules"]["mapping"].args[0]["state"]
    mapping["_buffers"]["w_avg"] = _expanded(40_000, 40_000)
    return write_nvlabs_pickle(tree, path)


def clip_with_a_view(path: Path) -> Path:
    torch.save({**_tiny_openai_clip_state(), "token_embedding.weight": _expanded(1_000_000, 4096)}, path)
    return path


def torchscript_with_a_view(path: Path) -> Path:
    """A TorchScript archive whose one tensor is a stride-0 view of a single stored float claiming 4 GB."""
    class Marker:
        pass

    marker = Marker()

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 1) if obj is marker else None

    buf = io.BytesIO()
    view = _Reduce(torch._utils._rebuild_tensor_v2, (marker, 0, (1 << 30,), (0,), False,
                                                     _Reduce(collections.OrderedDict, ())))
    _Pickler(buf, protocol=2).dump({"w": view})
    data = buf.getvalue()
    data = data[:2] + _global("__torch__", "Model") + b")\x81" + data[2:-1] + b"b."
    path.write_bytes(_zip([_stored("archive/data.pkl", data), _stored("archive/data/0", bytes(4)),
                           _stored("archive/constants.pkl", pickle.dumps((), protocol=2)),
                           _stored("archive/code/__torch__/model.py", b"class Model(Module):\n  pass\n")]))
    return path


def checkpoint_with_a_view(path: Path) -> Path:
    torch.save({"model": {"w": _expanded(50_000, 50_000)}, "step": 1}, path)
    return path


def nvlabs_with_an_unbuilt_array(path: Path) -> Path:
    from test_stylegan_files import write_nvlabs_pickle

    record = _nvlabs_record("Generator", {})
    record.args[0]["state"]["img_resolution"] = _Unbuilt()  # an attribute claiming 2e9 floats it never provides
    return write_nvlabs_pickle({"G_ema": record}, path)


def encoder_with_a_view(path: Path) -> Path:
    torch.save({"feature_extractor.conv1.weight": _expanded(64, 1, 7, 7), "x": _expanded(50_000, 50_000)}, path)
    return path


def _tf_generator_records(**kwarg_changes):
    sys.path.insert(0, str(REPO / "tests"))
    from tf_pickle_writer import generator_records, static_kwargs

    gen = _tiny_generator()
    return generator_records(gen, False, {**static_kwargs(gen, False), **kwarg_changes})


class _Unbuilt:
    """Pickles as numpy's ``_reconstruct(ndarray, shape, dtype)`` with no BUILD: no data, any claimed size."""

    def __reduce__(self):
        import numpy as np

        reconstruct = getattr(getattr(np, "_core", np.core).multiarray, "_reconstruct")
        return reconstruct, (np.ndarray, (2_000_000_000,), b"f")


def tf_with_an_unbuilt_array(path: Path) -> Path:
    from tf_pickle_writer import write_tf_pickle

    gs = _tf_generator_records()
    mapping = gs.state["components"]["mapping"].state
    mapping["variables"] = [(n, _Unbuilt() if n == "Dense0/weight" else v) for n, v in mapping["variables"]]
    return write_tf_pickle(path, gs)


def tf_sharing_one_array(path: Path) -> Path:
    import numpy as np
    from tf_pickle_writer import write_tf_pickle

    gs = _tf_generator_records()
    block = np.zeros(2 ** 16, np.float32)  # 256 KiB, stored once, named 3,000 times
    gs.state["variables"] = gs.state["variables"] + [(f"extra{i}", block) for i in range(3000)]
    return write_tf_pickle(path, gs)


def tf_with_a_huge_integer(path: Path) -> Path:
    from tf_pickle_writer import write_tf_pickle

    return write_tf_pickle(path, _tf_generator_records(mapping_lrmul=10 ** 400))


class _LegacyStorage:
    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.data,)


def nvlabs_with_code_in_a_legacy_storage(path: Path) -> Path:
    """A tensor storage that is itself a legacy ``torch.save`` stream asking for ``print``."""
    from test_stylegan_files import write_nvlabs_pickle

    inner = io.BytesIO()
    torch.save({"x": _Reduce(print, ("hello",))}, inner, _use_new_zipfile_serialization=False)
    return write_nvlabs_pickle({"G_ema": _nvlabs_record("Generator", {"w": _LegacyStorage(inner.getvalue())})}, path)


def tf_with_code_in_a_legacy_storage(path: Path) -> Path:
    from tf_pickle_writer import write_tf_pickle

    inner = io.BytesIO()
    torch.save({"x": _Reduce(print, ("hello",))}, inner, _use_new_zipfile_serialization=False)
    gs = _tf_generator_records()
    gs.state["variables"] = gs.state["variables"] + [("extra", _LegacyStorage(inner.getvalue()))]
    return write_tf_pickle(path, gs)


def legacy_file_with_code(path: Path) -> Path:
    torch.save({"features.0.weight": _Reduce(print, ("hello",))}, path, _use_new_zipfile_serialization=False)
    return path


def vgg16_with_a_view(path: Path) -> Path:
    torch.save({"features.0.weight": _expanded(64, 3, 3, 3), "classifier.0.weight": _expanded(50_000, 50_000)}, path)
    return path


def stylegan3_safetensors(path: Path, **changes) -> Path:
    from safetensors.torch import save_file

    config = {"resolution": 16, "z_dim": 8, "w_dim": 8, **changes}
    save_file({"x": torch.zeros(1)}, str(path), metadata={"sgim_kind": "stylegan3_generator", "sgim_format": "1",
                                                          "config": json.dumps(config)})
    return path


def clip_with_config_beside(path: Path, change) -> Path:
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config

    save_open_clip_state_dict(build_tiny_clip(), path)
    config = tiny_clip_config()
    if isinstance(change, str):
        path.with_suffix(".json").write_text(change)
    else:
        change(config)
        path.with_suffix(".json").write_text(json.dumps(config))
    return path


def _set(section: str, **values):
    return lambda config: config[section].update(values)


def _wav(path: Path, channels: int, seconds: float = 1.0, rate: int = 16000, claim_bytes: int | None = None) -> Path:
    """16-bit PCM WAV; ``claim_bytes``: what the data chunk's header says it holds."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * (220 + 20 * np.arange(channels)[:, None]) * t)).T
    data = (samples * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    size = len(data) if claim_bytes is None else claim_bytes
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", min(len(body) + size - len(data), 2 ** 32 - 1)) + body)
    return path


def flac_claiming(path: Path, claimed_seconds: float, rate: int = 8000) -> Path:
    """One second of FLAC whose STREAMINFO says ``claimed_seconds`` (36-bit total-samples field)."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((np.sin(np.arange(rate)[None] * 0.05) * 9000).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            out.mux(packet)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    info = 8  # after "fLaC" and the 4-byte block header
    total = int(claimed_seconds * rate)
    assert total < 2 ** 36
    fields = int.from_bytes(data[info + 10:info + 18], "big")  # rate 20 | channels 3 | bits 5 | total 36
    fields = (fields & ~((1 << 36) - 1)) | total
    data[info + 10:info + 18] = fields.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def _png(width: int, height: int, extra: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (3 * min(width, 64) + 1) * min(height, 4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + extra
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _text_bomb(kind: bytes) -> bytes:
    text = zlib.compress(b"a" * (300 << 20), 9)
    data = b"k\x00\x00" + text if kind == b"zTXt" else b"k\x00\x01\x00\x00\x00" + text
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# name -> (write the file at this path, the call (``{p}`` = the path), expected error, expected text)
ROUND2 = {
    # 1. views that claim gigabytes; a c_dim beyond bound
    "view-rosinality": (rosinality_with_a_view, "load_generator({p})", "ModelFileError", "claim more than"),
    "shared-view-rosinality": (rosinality_with_a_shared_view, "load_generator({p})", "ModelFileError", "claim more than"),
    "view-nvlabs": (nvlabs_with_a_view, "load_generator({p})", "ModelFileError", "claim more than"),
    "view-stylegan3": (nvlabs_stylegan3_with_a_view, "load_generator({p})", "ModelFileError", "claim more than"),
    "view-clip": (clip_with_a_view, "load_clip({p})", "ModelFileError", "claim more than"),
    "view-encoder": (encoder_with_a_view, "load_audio_encoder({p})", "ModelFileError", "claim more than"),
    "view-torchscript": (torchscript_with_a_view, "load_clip({p})", "ModelFileError", "claim more than"),
    "view-checkpoint": (checkpoint_with_a_view, "load_checkpoint(Path({p}))", "ModelFileError", "claim more than"),
    "c-dim": (lambda p: generator_safetensors(p, {**_tiny_config().to_dict(), "c_dim": 300_000_000}),
              "load_generator({p})", "ModelFileError", "c_dim: expected 0 (unconditional) or a number of classes "
                                                       "from 0 to 100000, got 300000000"),
    # 2. numpy arrays without data, or shared through the memo
    "tf-unbuilt-array": (tf_with_an_unbuilt_array, "load_generator({p})", "ModelFileError",
                         "'mapping/Dense0/weight' has shape [0], expected 2 dimensions"),
    "tf-shared-array": (tf_sharing_one_array, "load_generator({p})", "ModelFileError", "arrays claim more than"),
    "nvlabs-unbuilt-array": (nvlabs_with_an_unbuilt_array, "load_generator({p})", "ModelFileError",
                             "expected an NVlabs StyleGAN2"),
    "nvlabs-shared-tensor": (nvlabs_sharing_one_tensor, "load_generator({p})", "ModelFileError", "claim more than"),
    # 3. audio with many channels (planar frames past PyAV's 8 planes): decoded, not a crash
    "audio-12-channels": (lambda p: _wav(p, 12), "sum(c.shape[1] for c in iter_samples({p}))", None, "16000"),
    "audio-12-channels-mono": (lambda p: _wav(p, 12), "sum(c.shape[1] for c in iter_samples({p}, mono=True, "
                                                      "sample_rate=22050))", None, "22050"),
    "audio-12-channels-load": (lambda p: _wav(p, 12), "tuple(load_audio({p})[0].shape)", None, "(12, 16000)"),
    # 4. headers that lie about the length: the decoded length is what counts
    "flac-claims-99-days": (lambda p: flac_claiming(p, 99 * 86400), "round(probe({p}).seconds, 3)", None, "1.0"),
    "flac-claims-an-hour": (lambda p: flac_claiming(p, 3600), "round(probe({p}).seconds, 3)", None, "1.0"),
    "wav-claims-4-gb": (lambda p: _wav(p, 2, claim_bytes=2 ** 32 - 100), "round(probe({p}).seconds, 3)", None, "1.0"),
    "text-as-audio": (lambda p: p.write_text("just some notes, not a song\n" * 20), "load_audio({p})", "AudioError",
                      "not a readable audio file (this is a text file, not audio)"),
    # 7. StyleGAN3 designs whose render would need tens of GB, or that derive 0 channels / rate 0
    "sg3-render-cost": (lambda p: stylegan3_safetensors(p, resolution=4096, margin_size=1024, filter_size=64),
                        "load_generator({p})", "ModelFileError", "activation values per image"),
    "sg3-zero-channels": (lambda p: stylegan3_safetensors(p, channel_base=1), "load_generator({p})", "ModelFileError",
                          "derives 0 channels"),
    "sg3-tiny-stopband": (lambda p: stylegan3_safetensors(p, first_stopband=1e-9), "load_generator({p})",
                          "ModelFileError", "derives a sampling rate of"),
    # 9. a CLIP config beside the weights is validated, and never reaches a hub
    "clip-config-huge": (lambda p: clip_with_config_beside(p, _set("vision_cfg", width=16384, layers=128)),
                         "load_clip({p})", "ModelFileError", "do not fit"),
    "clip-config-hf": (lambda p: clip_with_config_beside(p, _set("text_cfg", hf_model_name="bert-base-uncased")),
                       "load_clip({p})", "ModelFileError", "would fetch a model from a hub"),
    "clip-config-hf-tokenizer": (lambda p: clip_with_config_beside(p, _set("text_cfg", hf_tokenizer_name="t5-base")),
                                 "load_clip({p})", "ModelFileError", "would fetch a model from a hub"),
    "clip-config-timm": (lambda p: clip_with_config_beside(p, _set("vision_cfg", timm_model_name="vit_base_patch16_224",
                                                                     timm_model_pretrained=True)),
                         "load_clip({p})", "ModelFileError", "would fetch a model from a hub"),
    "clip-config-deep": (lambda p: clip_with_config_beside(p, "[" * 100_000 + "]" * 100_000), "load_clip({p})",
                         "ModelFileError", "RecursionError"),
    "clip-config-layers": (lambda p: clip_with_config_beside(p, _set("text_cfg", layers=10 ** 6)), "load_clip({p})",
                           "ModelFileError", "text_cfg.layers: expected an integer from 1 to 128"),
    # 11. the VGG16 loader checks zip members too
    "vgg16-zip-bomb": (lambda p: zip_bomb(p, torchscript=False), "load_vgg16_features({p})", "ModelFileError",
                       "would inflate from"),
    "vgg16-storage-beyond-member": (lambda p: p.write_bytes(_zip([
        _stored("archive/data.pkl", torch_data_pickle(400_000_000, False)), _stored("archive/version", b"3\n"),
        _stored("archive/data/0", bytes(16))])), "load_vgg16_features({p})", "ModelFileError",
        "storage 0 declares 1,600,000,000 bytes but its archive member holds 16"),
    "vgg16-view": (vgg16_with_a_view, "load_vgg16_features({p})", "ModelFileError", "claim more than"),
    "vgg16-code": (legacy_file_with_code, "load_vgg16_features({p})", "UnsafeFileError",
                   "GLOBAL print was not an allowed global"),
    # 12. wrong-kind values
    "tf-400-digit-integer": (tf_with_a_huge_integer, "load_generator({p})", "ModelFileError",
                             "is not a finite number of usable size"),
    "config-deep-json": (lambda p: generator_safetensors(p, "[" * 100_000 + "]" * 100_000),
                         "load_generator({p})", "ModelFileError", "not valid JSON of usable depth"),
    "wplus-f8": (lambda p: _wplus_file(p, torch.zeros(1, 6, 32).to(torch.float8_e4m3fn)), "load_wplus({p})",
                 "ModelFileError", "found float8_e4m3fn [1, 6, 32]"),
    "wplus-list-config": (lambda p: _wplus_file(p, torch.zeros(1, 6, 32), config=[1, 2]), "load_wplus({p})",
                          "ModelFileError", "the 'config' metadata should be a JSON object, found list"),
    # 13. torch's advice never reaches the user on the nested legacy path
    "legacy-storage-code": (nvlabs_with_code_in_a_legacy_storage, "load_generator({p})", "UnsafeFileError",
                            "an embedded tensor asks for code beyond plain tensors"),
    "legacy-storage-code-tf": (tf_with_code_in_a_legacy_storage, "load_generator({p})", "UnsafeFileError",
                               "an embedded tensor asks for code beyond plain tensors"),
    "legacy-file-code-generator": (legacy_file_with_code, "load_generator({p})", "UnsafeFileError",
                                   "GLOBAL print was not an allowed global"),
    "legacy-file-code-checkpoint": (legacy_file_with_code, "load_checkpoint(Path({p}))", "ModelFileError",
                                    "GLOBAL print was not an allowed global"),
    # 18. pictures: the header's size first, Pillow's refusals named
    "png-50000-square": (lambda p: p.write_bytes(_png(50_000, 50_000)), "read_picture({p})", "ParameterError",
                         "decompression bomb"),
    "png-11000-square": (lambda p: p.write_bytes(_png(11_000, 11_000)), "read_picture({p})", "ParameterError",
                         "decompression bomb"),
    "png-9000-square": (lambda p: p.write_bytes(_png(9_000, 9_000)), "read_picture({p})", "ParameterError",
                        "says it is 9,000 x 9,000 pixels, more than the 67,108,864"),
    "png-ztxt-bomb": (lambda p: p.write_bytes(_png(4, 4, _text_bomb(b"zTXt"))), "read_picture({p})", "ParameterError",
                      "MAX_TEXT_CHUNK"),
    "png-itxt-bomb": (lambda p: p.write_bytes(_png(4, 4, _text_bomb(b"iTXt"))), "read_picture({p})", "ParameterError",
                      "MAX_TEXT_CHUNK"),
    "text-as-picture": (lambda p: p.write_text("not a picture"), "read_picture({p})", "ParameterError",
                        "not a picture Pillow can read"),
}
_SUFFIX = {"audio": ".wav", "flac": ".flac", "wav": ".wav", "text-as-audio": ".mp3", "sg3": ".safetensors",
           "c-dim": ".safetensors", "config": ".safetensors", "wplus": ".safetensors", "png": ".png",
           "text-as-picture": ".png", "clip-config": ".safetensors", "tf": ".pkl", "nvlabs": ".pkl",
           "legacy": ".pkl", "legacy-file": ".pt", "view-nvlabs": ".pkl", "view-stylegan3": ".pkl", "view-checkpoint": ".pt"}


def _suffix(name: str) -> str:
    best = max((key for key in _SUFFIX if name.startswith(key)), key=len, default=None)
    return _SUFFIX[best] if best else ".pt"


@pytest.fixture(scope="module")
def round2_outcomes(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    folder = tmp_path_factory.mktemp("hostile2")
    paths, calls = {}, []
    for name, (write, call, _, _) in ROUND2.items():
        path = folder / (name + _suffix(name))
        write(path)
        paths[name] = path
        calls.append([name, call.format(p=repr(str(path)))])
    outcomes = _run_bounded(calls)
    return {name: (paths[name], outcomes[name]) for name in ROUND2}


@pytest.mark.parametrize("name", ROUND2)
def test_round2_file_handled_in_bounded_time_and_memory(round2_outcomes, name):
    path, outcome = round2_outcomes[name]
    _, _, error, expected = ROUND2[name]
    assert outcome["seconds"] < ROUND2_SECONDS, outcome
    assert outcome["peak_growth"] < ROUND2_PEAK_BYTES, outcome
    if error is None:  # handled: decoded to what the file really holds
        assert outcome["error"] is None and outcome["result"] == expected, outcome
        return
    assert outcome["error"] == error, outcome
    message = outcome["message"]
    named = [path, path.with_suffix(".json")] if name.startswith("clip-config") else [path]  # or the config file
    assert any(str(n) in message for n in named) and expected in message, message
    assert "Traceback" not in message and "weights_only" not in message and "Errno" not in message, message
    if name.startswith("png"):
        assert path.stat().st_size < 1_000_000  # a small file claiming a large picture


def test_round2_files_are_small():
    """The claims (gigabytes) are made by files under 1 MB (the tiny CLIP's own weights are most of one)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for name in ("view-rosinality", "view-nvlabs", "view-clip", "tf-unbuilt-array", "legacy-storage-code"):
            path = Path(folder) / (name + _suffix(name))
            ROUND2[name][0](path)
            assert path.stat().st_size < 1_000_000, (name, path.stat().st_size)


# ------------------------------------------------------------------------------------ 5. downloads

class _HostileServer:
    """An HTTP server on 127.0.0.1 whose reply for ``/<behaviour>`` is one of the hostile replies below."""

    PAYLOAD = bytes(range(256)) * 4096  # 1 MiB

    def __init__(self):
        import http.server
        import threading
        import time

        payload = self.PAYLOAD

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                kind = self.path.strip("/")
                wanted = self.headers.get("Range")
                start = int(wanted.split("=")[1].rstrip("-")) if wanted else 0
                try:
                    if kind == "endless":  # no length, bytes without end
                        self.send_response(200)
                        self.end_headers()
                        while True:
                            self.wfile.write(bytes(65536))
                    elif kind == "drip":  # one byte at a time, slowly
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        for i in range(len(payload)):
                            self.wfile.write(payload[i:i + 1])
                            self.wfile.flush()
                            time.sleep(0.2)
                    elif kind == "stall":
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload[:1000])
                        self.wfile.flush()
                        time.sleep(5)
                    elif kind == "short":  # says 1 MiB, sends half, closes
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload[: len(payload) // 2])
                    elif kind == "416":
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(payload)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif kind == "206-from-zero":  # ignores the asked start, says so honestly
                        self.send_response(206)
                        self.send_header("Content-Range", f"bytes 0-{len(payload) - 1}/{len(payload)}")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                    elif kind == "206-elsewhere":
                        self.send_response(206)
                        self.send_header("Content-Range", f"bytes {start + 7}-{len(payload) - 1}/{len(payload)}")
                        self.send_header("Content-Length", str(len(payload) - start - 7))
                        self.end_headers()
                        self.wfile.write(payload[start + 7:])
                    elif kind == "bad-range":
                        self.send_response(206)
                        self.send_header("Content-Range", "bytes zero-lots/all")
                        self.send_header("Content-Length", "10")
                        self.end_headers()
                        self.wfile.write(payload[:10])
                    elif kind == "bad-length":
                        self.send_response(200)
                        self.send_header("Content-Length", "lots")
                        self.end_headers()
                        self.wfile.write(payload[:100])
                    elif kind == "bad-status":
                        self.wfile.write(b"HTTP/1.1 two hundred OK\r\n\r\n")
                    elif kind == "huge-length":
                        self.send_response(200)
                        self.send_header("Content-Length", str(1 << 50))
                        self.end_headers()
                        self.wfile.write(payload[:100])
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(scope="module")
def hostile_server():
    server = _HostileServer()
    yield server
    server.httpd.shutdown()


def _download_model(size=None, sha=None):
    from sgim_nodes.models import KnownModel

    return KnownModel(name="t", filename="model.bin", folder="stylegan", description="test", url="unused",
                      sha256=sha, size=size)


@pytest.mark.parametrize("kind, expected, part_kept", [
    ("endless", "more than the 2,097,152 bytes any model file has", False),
    ("drip", "the transfer took more than 2 s", True),
    ("stall", "no data for 1 s", True),
    ("short", "the connection ended after", True),
    ("bad-length", "invalid Content-Length ('lots')", False),
    ("bad-range", "invalid Content-Range ('bytes zero-lots/all')", False),
    ("bad-status", "the server's reply is malformed (BadStatusLine", False),
    ("huge-length", "the server announces 1,125,899,906,842,624 bytes, more than any model file", False),
])
def test_hostile_downloads_never_put_in_place(hostile_server, tmp_path, monkeypatch, kind, expected, part_kept):
    import time

    from sgim_nodes import download as dl
    from sgim_nodes import limits
    from sgim_nodes.download import DownloadError

    monkeypatch.setattr(limits, "MAX_DOWNLOAD_BYTES", 2 << 20)
    dest = tmp_path / "model.bin"
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        dl.download(_download_model(), dest, url=f"{hostile_server.base}/{kind}", progress=False, timeout=1,
                    deadline=2)
    assert time.perf_counter() - start < ROUND2_SECONDS
    assert expected in str(info.value) and hostile_server.base in str(info.value), str(info.value)
    assert not dest.exists()  # nothing under the final name, so the next run does not say "already present"
    part = tmp_path / "model.bin.part"
    assert part.exists() == (part_kept and part.stat().st_size > 0) or not part_kept and not part.exists()


def test_download_416_and_206_replies(hostile_server, tmp_path):
    from sgim_nodes import download as dl
    from sgim_nodes.download import DownloadError

    payload = _HostileServer.PAYLOAD
    dest, part = tmp_path / "model.bin", tmp_path / "model.bin.part"
    part.write_bytes(payload[:1000])  # 416 saying the file has 1 MiB: the 1000 bytes are not all of it
    with pytest.raises(DownloadError, match="refused to resume the partial download"):
        dl.download(_download_model(), dest, url=f"{hostile_server.base}/416", progress=False)
    assert not dest.exists() and not part.exists()
    part.write_bytes(payload)  # 416 when every byte is there: complete
    assert dl.download(_download_model(), dest, url=f"{hostile_server.base}/416", progress=False).read_bytes() == payload
    part.write_bytes(payload[:1000])  # 206 from byte 0: a fresh start, not appended
    assert dl.download(_download_model(), dest, url=f"{hostile_server.base}/206-from-zero",
                       progress=False).read_bytes() == payload
    part.write_bytes(payload[:1000])
    dest.unlink()
    with pytest.raises(DownloadError, match="resumed at byte 1,007, not at 1,000"):
        dl.download(_download_model(), dest, url=f"{hostile_server.base}/206-elsewhere", progress=False)
    assert not dest.exists()
    with pytest.raises(DownloadError, match="but 't' is 5 bytes as published"):  # the registry's known size
        dl.download(_download_model(size=5), dest, url=f"{hostile_server.base}/206-from-zero", progress=False)


def test_download_command_reports_a_short_body_in_one_message(hostile_server, tmp_path, capsys, monkeypatch):
    from sgim_nodes import download as dl
    from sgim_nodes.models import KNOWN_MODELS

    monkeypatch.setenv("SGIM_MODEL_BASE_URL", f"{hostile_server.base}/short#")
    code = dl.main(["vgg16", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "the connection ended after" in err, err
    dest = tmp_path / KNOWN_MODELS["vgg16"].folder / KNOWN_MODELS["vgg16"].filename
    assert not dest.exists()
    code = dl.main(["vgg16", "--dir", str(tmp_path)])  # not "already present": it resumes
    assert code == 1 and "already present" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------ 4. audio inflation

def test_audio_decoding_past_the_inflation_budget_is_refused(tmp_path, monkeypatch):
    from sgim_nodes import limits
    from sgim_nodes.animate.stream import iter_samples
    from sgim_nodes.audio.decode import load_audio
    from sgim_nodes.errors import AudioError

    path = flac_claiming(tmp_path / "one_second.flac", 1)
    assert load_audio(path)[0].shape == (1, 8000)
    monkeypatch.setattr(limits, "MIN_AUDIO_BUDGET_BYTES", 1000)
    monkeypatch.setattr(limits, "MAX_AUDIO_INFLATION", 1)
    for read in (load_audio, lambda p: list(iter_samples(p, mono=True, sample_rate=16000))):
        with pytest.raises(AudioError) as info:
            read(path)
        assert str(path) in str(info.value) and "real audio never compresses that far" in str(info.value)


# ------------------------------------------------------------------------------------ 8. AAC sample rates

@pytest.mark.parametrize("rate, channels, muxer_rate", [(100, 1, 7350), (1, 2, 7350), (192_000, 2, 96_000),
                                                       (44_100, 12, 44_100), (22_050, 1, 22_050)])
def test_video_audio_at_rates_aac_cannot_encode(tmp_path, rate, channels, muxer_rate):
    from sgim_nodes.animate.render import VideoWriter, check_video_audio, video_frame_count
    from sgim_nodes.animate.timeline import Timeline

    assert check_video_audio(rate, channels) == muxer_rate  # before any work: what the muxer will take
    timeline = Timeline(fps=10, start=0.0, frames=10)
    chunks = iter([torch.sin(torch.arange(rate) * 0.1).repeat(channels, 1) * 0.3])
    writer = VideoWriter(tmp_path / "v.mp4", timeline, 32, 32, audio=chunks, sample_rate=rate, channels=channels)
    import numpy as np

    writer.write(np.zeros((10, 32, 32, 3), np.uint8))
    writer.close()
    frames, video_seconds, audio_seconds = video_frame_count(tmp_path / "v.mp4")
    assert frames == 10 and abs(audio_seconds - 1.0) < 0.05


@pytest.mark.parametrize("rate", [0, 44_100.5, 10 ** 7, True])
def test_video_audio_rate_refused_before_the_work(rate):
    from sgim_nodes.animate.render import check_video_audio
    from sgim_nodes.errors import ParameterError

    with pytest.raises(ParameterError, match="sample_rate: expected a sample rate in Hz from 1 to 768000"):
        check_video_audio(rate, 2)


# ------------------------------------------------------------------------------------ 12. wrong-kind values

def _deep_list(depth: int = 100_000) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [_deep_list(), 10 ** 400, 10 ** 5000, [1, 2, 3], "12", float("nan")],
                         ids=["deep-list", "400-digits", "5000-digits", "list", "text", "nan"])
def test_wrong_kind_values_worded_safely(tmp_path, value):
    import numpy as np

    from sgim_nodes.errors import ModelFileError, ParameterError
    from sgim_nodes.limits import check_float, check_int, short_repr
    from sgim_nodes.stylegan import stylegan3_files, tf_pickle

    assert len(short_repr(value)) <= 120
    with pytest.raises(ParameterError) as info:
        check_int("margin_size", value, 0, 1024)
    assert info.value.parameter == "margin_size" and len(str(info.value)) < 300
    with pytest.raises(ParameterError):
        check_float("first_stopband", value, 0, 1e4)
    for module in (stylegan3_files, tf_pickle):
        with pytest.raises(ModelFileError) as info:
            module._number(np.array([1.0, 2.0]) if isinstance(value, str) else value, "margin_size", tmp_path)
        assert str(tmp_path) in str(info.value) and len(str(info.value)) < 400


def test_stylegan3_init_kwargs_of_the_wrong_kind_named(tmp_path):
    import numpy as np

    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.stylegan import StyleGAN3Config, StyleGAN3Generator, load_generator
    from test_stylegan3 import nvlabs_tree
    from test_stylegan_files import write_nvlabs_pickle

    config = StyleGAN3Config(resolution=16, z_dim=8, w_dim=8, channel_base=64, channel_max=8, num_layers=2,
                             num_critical=1)
    for key, value, expected in (("margin_size", 10 ** 400, "margin_size should be a number of usable size"),
                                 ("channel_base", np.array([64, 64]), "channel_base should be a number, found ndarray"),
                                 ("use_radial_filters", np.array([1, 0]), "use_radial_filters should be true or false"),
                                 ("first_stopband", 1e-9, "derives a sampling rate of")):
        torch.manual_seed(0)
        tree = nvlabs_tree(StyleGAN3Generator(config))
        tree["G_ema"].args[0]["state"]["_init_kwargs"][key] = value
        path = write_nvlabs_pickle(tree, tmp_path / f"{key}.pkl")
        with pytest.raises(ModelFileError) as info:
            load_generator(path)
        assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------ 14. training

def _train_once(train_assets, tmp_path):
    from sgim_nodes.train.loop import train

    out = tmp_path / "enc.safetensors"
    torch.set_num_threads(1)
    train(train_config(train_assets, out, epochs=1, batch_size=12, max_steps=1, checkpoint_every=1))
    return out, tmp_path / "enc_run" / "checkpoint.pt"


def test_training_stops_on_nan_and_keeps_the_last_good_checkpoint(train_assets, tmp_path, monkeypatch):
    from sgim_nodes.errors import NonFiniteError
    from sgim_nodes.train import loop

    out, checkpoint = _train_once(train_assets, tmp_path)
    good = torch.load(checkpoint, weights_only=True)
    forward = loop.ContrastiveModel.forward

    def nan_loss(self, *args, **kwargs):
        loss, parts = forward(self, *args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(loop.ContrastiveModel, "forward", nan_loss)
    out.unlink()
    with pytest.raises(NonFiniteError) as info:
        loop.train(train_config(train_assets, out, epochs=1, batch_size=12, max_steps=3, checkpoint_every=1,
                                resume=True))
    assert "training went non-finite at step 2" in str(info.value) and "lower --lr" in str(info.value)
    assert f"The last good checkpoint {checkpoint} is kept" in str(info.value)
    kept = torch.load(checkpoint, weights_only=True)
    assert kept["step"] == 1 and all(torch.equal(kept["model"][k], v) for k, v in good["model"].items())
    assert not out.exists()  # no encoder exported from NaN weights


def test_training_stops_when_the_weights_go_infinite(train_assets, tmp_path, monkeypatch):
    """A step that leaves an infinite weight behind a finite loss stops the run too, naming the weight."""
    from sgim_nodes.errors import NonFiniteError
    from sgim_nodes.train import loop

    make = loop.make_optimizer

    def poisoned(cfg, model):
        optimizer = make(cfg, model)

        def poison(*_):
            with torch.no_grad():
                next(model.encoder.parameters()).view(-1)[0] = float("inf")

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", poisoned)
    out = tmp_path / "enc.safetensors"
    with pytest.raises(NonFiniteError) as info:
        loop.train(train_config(train_assets, out, epochs=1, batch_size=12, max_steps=2, checkpoint_every=1))
    assert "training went non-finite at step 1 (weight '" in str(info.value) and "No checkpoint was written" in str(
        info.value)
    assert not (tmp_path / "enc_run" / "checkpoint.pt").exists() and not out.exists()


@pytest.mark.parametrize("lr", [1e30, float("inf"), 101.0, float("nan")])
def test_training_lr_bounded(train_assets, tmp_path, lr):
    from sgim_nodes.errors import ParameterError

    with pytest.raises(ParameterError) as info:
        train_config(train_assets, tmp_path / "enc.safetensors", lr=lr).validate()
    assert info.value.parameter == "lr" and "lr: expected a learning rate in (0, 100]" in str(info.value)


@pytest.mark.parametrize("change, expected", [
    (lambda s: s["scheduler"].update(T_0="x"), "'T_0' should be a finite number"),
    (lambda s: s["scheduler"].update(base_lrs=[float("nan")]), "'base_lrs' should be 1 learning rates"),
    (lambda s: s["scheduler"].update(T_cur=1e300), "'T_cur' should be a finite number"),
    (lambda s: s["scheduler"].update(evil=1), "fields ['evil'] differ"),
    (lambda s: s["scheduler"].update(T_0=10 ** 9), "'T_0' is 1000000000, this run's settings give"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr=1e30), "the optimiser's learning rates"),
    (lambda s: s.update(epoch=-10 ** 9), "'epoch' is -1000000000, outside this run (0 to 1)"),
    (lambda s: s.update(step=10 ** 400), "'step' is 1000000"),
    (lambda s: s.update(batch_in_epoch=10 ** 6), "'batch_in_epoch' is 1000000, outside this run"),
])
def test_hostile_schedule_in_a_resumed_checkpoint_refused_at_resume(train_assets, tmp_path, change, expected):
    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.train.loop import train

    out, checkpoint = _train_once(train_assets, tmp_path)
    state = torch.load(checkpoint, weights_only=True)
    change(state)
    torch.save(state, checkpoint)
    saved = checkpoint.read_bytes()
    out.unlink()
    with pytest.raises(ModelFileError) as info:
        train(train_config(train_assets, out, epochs=1, batch_size=12, max_steps=2, checkpoint_every=1, resume=True))
    assert f"{checkpoint}: cannot resume" in str(info.value) and expected in str(info.value), str(info.value)
    assert checkpoint.read_bytes() == saved and not out.exists()  # refused at resume, before any step


# ------------------------------------------------------------------------------------ 16. audio features

def test_audio_features_never_nan_and_rates_whole():
    from sgim_nodes.animate.features import features_of_waveform
    from sgim_nodes.animate.timeline import Timeline
    from sgim_nodes.errors import AudioError

    timeline = Timeline(fps=10, start=0.0, frames=10)
    torch.manual_seed(0)
    noise = torch.randn(1, 22050).clamp(-1, 1)
    loud = features_of_waveform(noise * 1e4, 22050, timeline)  # finite, huge, within the accepted range
    assert all(math.isfinite(v) for curve in loud.values.values() for v in curve)
    assert max(loud.values["loudness"]) == 1.0
    for scale in (1e5, 1e30, 3e38):
        with pytest.raises(AudioError, match=r"audio: samples reach .* rescale it"):
            features_of_waveform(noise * scale, 22050, timeline)
    for rate in (22050.5, 0, -1, 10 ** 7):
        with pytest.raises(AudioError, match="sample_rate: expected a whole number of Hz from 1 to 768,000"):
            features_of_waveform(noise, rate, timeline)


# ------------------------------------------------------------------------------------ 17. class names

def test_class_names_and_indices_as_text():
    from types import SimpleNamespace

    from sgim_nodes.errors import ParameterError
    from sgim_nodes.stylegan.labels import class_index

    digits = SimpleNamespace(name="g", c_dim=3, class_names=["2", "0", "1"])
    assert [class_index(digits, n) for n in ("2", "0", "1")] == [0, 1, 2]  # names first: they are digits here
    assert class_index(digits, 1) == 1  # an int is an index
    named = SimpleNamespace(name="g", c_dim=3, class_names=["cat", "dog", "owl"])
    assert class_index(named, "dog") == 1 and class_index(named, " 2 ") == 2
    for text, expected in (("²", "has no class named '²'"), ("--1", "has no class named '--1'"),
                           ("9" * 5000, "of 5,000 characters"), ("-1", "class -1 is out of range"),
                           ("٣", "has no class named")):
        with pytest.raises(ParameterError) as info:
            class_index(named, text)
        assert expected in str(info.value) and len(str(info.value)) < 400, str(info.value)


def test_stored_class_names_of_the_wrong_kind(tmp_path):
    from safetensors.torch import save_file

    from sgim_nodes.errors import ModelFileError
    from sgim_nodes.stylegan import Generator, GeneratorConfig, load_generator

    config = GeneratorConfig(resolution=8, z_dim=8, w_dim=8, n_mapping=1, channels={4: 4, 8: 4}, c_dim=2)
    tensors = {k: v.float().contiguous() for k, v in Generator(config).state_dict().items()}
    for names, expected in (("[" * 50_000 + "]" * 50_000, "RecursionError"), (json.dumps([{"a": 1}, "b"]),
                                                                              "class names must be strings"),
                            (json.dumps(["x" * 500, "b"]), "at most 200 characters")):
        path = tmp_path / "g.safetensors"
        save_file(tensors, str(path), metadata={"sgim_kind": "stylegan2_generator", "sgim_format": "1",
                                                "config": json.dumps(config.to_dict()), "class_names": names})
        with pytest.raises(ModelFileError) as info:
            load_generator(path)
        assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------ legitimate files

def test_legitimate_files_still_load_through_the_new_budgets(fixtures_dir, tmp_path):
    """Real formats pass every new budget: reference generators of each format, a CLIP with its config
    beside it, audio of several channel counts, an ordinary picture."""
    import numpy as np
    from PIL import Image

    from sgim_nodes.audio.decode import load_audio
    from sgim_nodes.clip import build_tiny_clip, load_clip, save_open_clip_state_dict, tiny_clip_config
    from sgim_nodes.pictures import read_picture
    from sgim_nodes.stylegan import load_generator

    for path in sorted((fixtures_dir / "stylegan2").glob("*.p*")) + sorted((fixtures_dir / "stylegan_more").glob("*.pkl")):
        if "malformed" in path.name or "bad" in path.name:
            continue
        assert load_generator(path).num_ws > 0, path
    save_open_clip_state_dict(build_tiny_clip(), tmp_path / "clip.safetensors", config=tiny_clip_config())
    assert load_clip(tmp_path / "clip.safetensors").embed_dim == 32
    for channels in (1, 2, 6, 8, 9):
        waveform, rate = load_audio(_wav(tmp_path / f"c{channels}.wav", channels))
        assert waveform.shape == (channels, 16000) and rate == 16000
        # integer PCM scaled exactly by 2^15
        assert float(waveform[0, 4]) == int(0.3 * math.sin(2 * math.pi * 220 * 4 / 16000) * 32767) / 32768
    Image.fromarray(np.full((300, 400, 3), 7, np.uint8)).save(tmp_path / "ok.png")
    assert read_picture(tmp_path / "ok.png").size == (400, 300)


def test_download_drip_without_a_deadline_stops_on_its_rate(hostile_server, tmp_path, monkeypatch):
    from sgim_nodes import download as dl
    from sgim_nodes import limits
    from sgim_nodes.download import DownloadError

    monkeypatch.setattr(limits, "MIN_DOWNLOAD_SECONDS", 1.0)
    with pytest.raises(DownloadError, match=r"bytes/s after \d+ s, too slow to be a working transfer"):
        dl.download(_download_model(), tmp_path / "model.bin", url=f"{hostile_server.base}/drip", progress=False,
                    timeout=5)
    assert not (tmp_path / "model.bin").exists()


def test_embed_audio_command_on_many_channels_and_on_text(tmp_path, capsys):
    """The command line reads the same decoder: a 12-channel file embeds, a text file is one error line."""
    from sgim_nodes.audio import build_audio_encoder, save_audio_encoder

    torch.manual_seed(0)
    save_audio_encoder(build_audio_encoder(embed_dim=16), tmp_path / "enc.safetensors")
    out = tmp_path / "embedding.safetensors"
    code, err = _cli(["embed-audio", str(_wav(tmp_path / "c12.wav", 12, seconds=2.0)), "--encoder",
                      str(tmp_path / "enc.safetensors"), "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0 and out.is_file(), err
    notes = tmp_path / "notes.wav"
    notes.write_text("these are my notes\n")
    code, err = _cli(["embed-audio", str(notes), "--encoder", str(tmp_path / "enc.safetensors")], capsys)
    line = _one_line(err)
    assert code == 1 and f"{notes}: not a readable audio file (this is a text file, not audio)" in line
    assert "Errno" not in line

