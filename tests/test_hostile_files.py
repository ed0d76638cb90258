"""Hostile files and extreme values: every one is refused with a clear error in bounded time and memory.

Each hostile file is built here, at test time, in a few kilobytes (no fixtures committed). The loads
that used to hang or eat gigabytes run in a subprocess that reports its wall time and the growth of
its peak resident memory (VmHWM) during the load alone; the subprocess also has an address-space
limit, so a regression fails the test instead of taking the machine down. Budgets asserted:
``LOAD_SECONDS`` and ``LOAD_PEAK_BYTES`` (the limits themselves live in ``sgim_nodes/limits.py``).
"""

from __future__ import annotations

import collections
import io
import json
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


# ------------------------------------------------------------------------------------ bounded runs

RUNNER = textwrap.dedent("""
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    {imports}

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    before, start = peak(), time.perf_counter()
    try:
        {call}
        outcome = {{"error": None}}
    except BaseException as exc:
        outcome = {{"error": type(exc).__name__, "classes": [c.__name__ for c in type(exc).__mro__],
                    "message": str(exc)}}
    outcome.update(seconds=time.perf_counter() - start, peak_growth=peak() - before)
    print("OUTCOME " + json.dumps(outcome))
""")


def _limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def bounded(call: str, imports: str) -> dict:
    """Run ``call`` in a fresh interpreter; its outcome with the load's wall time and peak-memory growth."""
    code = RUNNER.format(imports=imports, call=call)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_address_space)
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME ")]
    assert lines, f"no outcome (exit {done.returncode}): {done.stderr[-2000:]}"
    outcome = json.loads(lines[-1][len("OUTCOME "):])
    assert outcome["seconds"] < LOAD_SECONDS, outcome
    assert outcome["peak_growth"] < LOAD_PEAK_BYTES, outcome
    return outcome


LOAD_GENERATOR = "from sgim_nodes.stylegan import load_generator"
LOAD_CLIP = "from sgim_nodes.clip import load_clip"


@pytest.mark.parametrize("build, expected", [
    (billion_laughs_pickle, "module records"),
    (deep_chain_pickle, "levels of nesting"),
    (unfilled_storage_pickle, "declares 6,400,000,008 bytes of tensor data but holds only 8"),
], ids=["billion-laughs", "20000-deep", "unfilled-storage"])
def test_hostile_pickles_refused_in_bounded_time_and_memory(tmp_path, build, expected):
    path = tmp_path / "hostile.pkl"
    path.write_bytes(build())
    assert path.stat().st_size < 1_500_000
    outcome = bounded(f"load_generator({str(path)!r})", LOAD_GENERATOR)
    assert outcome["error"] == "ModelFileError", outcome
    assert str(path) in outcome["message"] and expected in outcome["message"]


@pytest.mark.parametrize("torchscript", [False, True], ids=["torch-zip", "torchscript"])
def test_zip_bomb_refused_from_its_header(tmp_path, torchscript):
    path = zip_bomb(tmp_path / "bomb.pt", torchscript)
    assert path.stat().st_size < 6 * 2 ** 20  # a few MB on disk, 4 GiB once inflated
    call = f"load_clip({str(path)!r})" if torchscript else f"load_generator({str(path)!r})"
    outcome = bounded(call, LOAD_CLIP if torchscript else LOAD_GENERATOR)
    assert outcome["error"] == "ModelFileError", outcome
    assert "would inflate from" in outcome["message"] and "4,293,918,720 bytes" in outcome["message"]


def test_torchscript_billion_laughs_refused(tmp_path):
    path = torchscript_billion_laughs(tmp_path / "laughs.pt")
    outcome = bounded(f"load_clip({str(path)!r})", LOAD_CLIP)
    assert outcome["error"] == "ModelFileError", outcome
    assert "module records" in outcome["message"] and str(path) in outcome["message"]


def test_storage_larger_than_its_member_refused(tmp_path):
    """A plain torch zip whose data.pkl declares more bytes than its stored member holds."""
    path = tmp_path / "short.pt"
    path.write_bytes(_zip([_stored("archive/data.pkl", torch_data_pickle(400_000_000, False)),
                           _stored("archive/version", b"3\n"), _stored("archive/data/0", bytes(16))]))
    outcome = bounded(f"load_generator({str(path)!r})", LOAD_GENERATOR)
    assert outcome["error"] == "ModelFileError", outcome
    assert "storage 0 declares 1,600,000,000 bytes but its archive member holds 16" in outcome["message"]


def test_real_files_pass_the_budgets(fixtures_dir):
    """The budgets refuse nothing real: both reference generators load."""
    from sgim_nodes.stylegan import load_generator

    for name in ("rosinality_tiny.pt", "nvlabs_tiny.pkl"):
        assert load_generator(fixtures_dir / "stylegan2" / name).num_ws > 0


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
                                            "config": json.dumps(config)})
    return path


def test_config_resolution_of_a_billion_refused_before_building(tmp_path):
    path = generator_safetensors(tmp_path / "huge.safetensors", {"resolution": 1073741824},
                                 {"x": torch.zeros(1)})
    assert path.stat().st_size < 300
    outcome = bounded(f"load_generator({str(path)!r})", LOAD_GENERATOR)
    assert outcome["error"] == "ModelFileError", outcome
    assert "resolution: expected a power of two from 4 to 4096, got 1073741824" in outcome["message"]


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

def _wplus_file(path: Path, ws: torch.Tensor) -> Path:
    from safetensors.torch import save_file

    save_file({"ws": ws}, str(path), metadata={"sgim_kind": "wplus_latent", "sgim_format": "1",
                                               "config": json.dumps({"generator": "tiny16"})})
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


def test_target_weights_and_huge_targets():
    from sgim_nodes.errors import ParameterError
    from sgim_nodes.optimize.objective import combine_targets

    torch.manual_seed(0)
    targets = torch.randn(1, 2, 8)
    for weights in ([-1.0, 1.0], [0.0, 0.0]):
        with pytest.raises(ParameterError, match="target_weights: expected weights >= 0 with a positive sum"):
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
