"""Training runs: learning on synthetic data (evaluated by the evaluate command), exact resume after
kill -9, torchrun with two gloo processes, bad-data threshold, options."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sgim_nodes.errors import AudioError, ParameterError
from sgim_nodes.train.loop import TrainConfig, load_checkpoint, train
from sgim_nodes.train.synthetic import make_dataset

REPO = Path(__file__).resolve().parents[1]
CLIP_NAME = "sgim-test-train-tiny-clip"
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random open_clip model (weights + config JSON) and a 4-class synthetic dataset."""
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config

    root = tmp_path_factory.mktemp("train_assets")
    config = root / f"{CLIP_NAME}.json"
    config.write_text(json.dumps(tiny_clip_config(32)))
    save_open_clip_state_dict(build_tiny_clip(32, seed=0, name=CLIP_NAME), root / "clip.safetensors")
    make_dataset(root / "synth", per_class=12, classes=4, seed=0)  # 9 train + 3 test clips per class
    return root


def _args(assets: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(assets / "synth"), "--split", "train", "--clip", str(assets / "clip.safetensors"),
            "--clip-config", str(assets / f"{CLIP_NAME}.json"), "--clip-model", CLIP_NAME, "--features", "compact",
            "--out", str(out), "--no-progress", *extra]


def _config(assets: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(assets / "synth"), split="train", clip=str(assets / "clip.safetensors"),
                clip_config=str(assets / f"{CLIP_NAME}.json"), clip_model=CLIP_NAME, features="compact",
                out=str(out), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_short_run_learns_the_synthetic_classes(assets, tmp_path, capsys):
    """CI-sized version of the acceptance run: 36 training clips, 24 steps. The bar (>= 7 of the 12
    held-out clips right = 58.3 % zero-shot top-1, more than twice the 25 % chance) is checked on what
    the evaluate command measures (this seed reached 75 % when the test was written)."""
    from sgim_nodes import evaluate

    out = tmp_path / "enc.safetensors"
    torch.set_num_threads(1)
    train(_config(assets, out, epochs=8, batch_size=12, lr=0.1, cycle_epochs=8, checkpoint_every=1000))
    rows = _log(tmp_path / "enc_run")
    assert [int(r["step"]) for r in rows] == list(range(1, 25)) and {r["samples"] for r in rows} == {"12"}
    assert float(rows[-1]["loss_text"]) < float(rows[0]["loss_text"])

    from sgim_nodes.audio import load_audio_encoder

    encoder = load_audio_encoder(out)
    assert encoder.config["clip_model"] == CLIP_NAME and encoder.settings.n_mels == 32  # compact preset recorded

    capsys.readouterr()
    assert evaluate.main(["--encoder", str(out), "--clip", str(assets / "clip.safetensors"),
                          "--clip-config", str(assets / f"{CLIP_NAME}.json"), "--clip-model", CLIP_NAME,
                          "--data", str(assets / "synth"), "--json", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    row = result["rows"][0]
    assert row["name"] == "split test" and row["clips"] == 12 and result["template"] == "{}"
    assert f"{row['zero_shot_top1']:.1f}" in printed and "paper reports" not in printed
    print(f"short run: zero-shot top-1 {row['zero_shot_top1']:.1f} %, probe top-1 {row.get('probe_top1')}")
    assert row["zero_shot_top1"] >= 58.3


@pytest.mark.slow
def test_kill_9_then_resume_gives_bit_identical_weights(assets, tmp_path):
    common = ["--epochs", "2", "--batch-size", "8", "--checkpoint-every", "2", "--lr", "0.01"]  # 2 x 4 steps
    full = subprocess.Popen([sys.executable, "-m", "sgim_nodes.train",
                             *_args(assets, tmp_path / "full.safetensors", *common)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim_cmd = [sys.executable, "-m", "sgim_nodes.train", *_args(assets, tmp_path / "cut.safetensors", *common)]
    victim = subprocess.Popen(victim_cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "cut_run" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.kill()  # SIGKILL: no cleanup, no final checkpoint
    victim.wait()
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 2 <= killed_at < 8 and not (tmp_path / "cut.safetensors").exists()

    resumed = subprocess.run(victim_cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {checkpoint} at step {killed_at}" in resumed.stderr
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()[-2000:]

    a, b = _weights(tmp_path / "full.safetensors"), _weights(tmp_path / "cut.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    # the log continues without duplicated or missing steps, with the same losses
    full_log, cut_log = _log(tmp_path / "full_run"), _log(tmp_path / "cut_run")
    assert [r["step"] for r in cut_log] == [str(i) for i in range(1, 9)]
    assert [r["loss"] for r in cut_log] == [r["loss"] for r in full_log]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_gradient_equals_single_process_global_batch(tmp_path):
    """Two gloo processes, each with half of a batch, must produce the single-process gradient of the
    whole batch (all-gathered negatives, gradients through every shard, learnable temperature)."""
    script = tmp_path / "ddp_grad.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        from sgim_nodes.train.losses import ContrastiveLoss
        from sgim_nodes.train.loop import ContrastiveModel

        torch.manual_seed(0)
        audio, aug, text = torch.randn(8, 6), torch.randn(8, 6), torch.randn(8, 4)
        ids = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])

        def model():
            torch.manual_seed(1)
            return ContrastiveModel(torch.nn.Linear(6, 4), ContrastiveLoss(learnable_temperature=True))

        ref = model()  # before the process group exists: plain single-process loss of the global batch
        ref(audio, aug, text, ids)[0].backward()
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        ddp = DistributedDataParallel(model())
        part = slice(4 * rank, 4 * rank + 4)
        loss, _ = ddp(audio[part], aug[part], text[part], ids[part])
        loss.backward()
        diffs = [(p.grad - q.grad).abs().max().item() for p, q in zip(ddp.module.parameters(), ref.parameters())]
        norms = [q.grad.abs().max().item() for q in ref.parameters()]
        print(f"rank{rank} max_diff={max(diffs):.3e} min_grad={min(norms):.3e}", flush=True)
        del ddp  # DDP's reducer must go before the group, and both ranks must reach the end first:
        dist.barrier()  # otherwise gloo can abort one rank at exit ("terminate called without an active exception")
        dist.destroy_process_group()
        import os  # on a loaded machine gloo's threads can still abort the interpreter's teardown after the
        os._exit(0)  # check is done: leave without it (the output above is flushed)
    """))
    proc = subprocess.run([str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(_free_port()), str(script)],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both ranks write to one pipe, so their lines can interleave: match the fields, not whole lines
    found = {int(r): (float(d), float(g)) for r, d, g in
             re.findall(r"rank(\d) max_diff=([-+.\de]+) min_grad=([-+.\de]+)", proc.stdout)}
    assert sorted(found) == [0, 1], proc.stdout
    for rank, (diff, grad) in found.items():
        assert grad > 1e-4 and diff < 1e-6, (rank, diff, grad)


@pytest.mark.slow
def test_torchrun_two_processes_train_with_the_global_batch(assets, tmp_path):
    out = tmp_path / "ddp.safetensors"
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "--master-port", str(_free_port()), "-m", "sgim_nodes.train",
           *_args(assets, out, "--batch-size", "4", "--max-steps", "3", "--checkpoint-every", "3")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _log(tmp_path / "ddp_run")
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert {r["samples"] for r in rows} == {"8"}  # 2 processes x 4 = the global batch, every step
    state = load_checkpoint(tmp_path / "ddp_run" / "checkpoint.pt")
    assert state["global_batch"] == 8 and state["step"] == 3
    from sgim_nodes.audio import load_audio_encoder

    assert load_audio_encoder(out).embed_dim == 32


def test_bad_audio_is_skipped_and_counted_until_the_threshold(assets, tmp_path, caplog):
    import shutil

    data = tmp_path / "synth"
    shutil.copytree(assets / "synth", data)
    rows = (data / "manifest.csv").read_text().splitlines()
    broken = rows[1].split(",")[0]
    (data / broken).write_text("not audio")  # one unreadable file among 36 training clips
    out = tmp_path / "enc.safetensors"
    cfg = _config(assets, out, data=str(data), epochs=1, batch_size=12, max_bad_fraction=0.05)
    with caplog.at_level("WARNING", logger="sgim.train"):
        train(cfg)
    assert any("skipping unreadable audio" in r.message and broken in r.message for r in caplog.records)
    log_rows = _log(tmp_path / "enc_run")
    assert int(log_rows[-1]["bad_files"]) == 1 and "11" in {r["samples"] for r in log_rows}
    assert (tmp_path / "enc_run" / "bad_files.txt").read_text().strip().endswith(broken)

    for line in rows[2:4]:
        (data / line.split(",")[0]).write_bytes(b"")  # two more zero-byte files: 3/36 > 5 %
    with pytest.raises(AudioError, match=r"3 of 36 audio files are unreadable or empty"):
        train(_config(assets, tmp_path / "enc2.safetensors", data=str(data), epochs=1, batch_size=12,
                      max_bad_fraction=0.05))


def _manifest_with_images(assets: Path, folder: Path) -> Path:
    """The synthetic training rows plus an image per class (PNG files; one class gets a video, one none)."""
    import av
    import numpy as np
    from PIL import Image

    rows = list(csv.DictReader(open(assets / "synth" / "manifest.csv", newline="")))
    labels = sorted({r["label"] for r in rows})
    images = {}
    for i, label in enumerate(labels[:2]):
        images[label] = folder / f"{i}.png"
        Image.fromarray(np.full((40, 48, 3), 60 * i, np.uint8)).save(images[label])
    video = folder / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 50 * k, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    images[labels[2]] = video
    manifest = folder / "with_images.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["audio", "label", "split", "image"])
        for r in rows:
            writer.writerow([assets / "synth" / r["audio"], r["label"], r["split"], images.get(r["label"], "")])
    return manifest


def test_options_images_accumulation_adamw_learnable_temperature_and_resume_checks(assets, tmp_path):
    out = tmp_path / "enc.safetensors"
    manifest = _manifest_with_images(assets, tmp_path)
    cfg = _config(assets, out, data=str(manifest), epochs=2, batch_size=6, accum_steps=2, optimizer="adamw",
                  lr=1e-3, learnable_temperature=True, max_steps=3, checkpoint_every=1)
    train(cfg)
    rows = _log(tmp_path / "enc_run")
    assert [r["samples"] for r in rows] == ["12"] * 3  # 2 micro-batches of 6 per optimiser step
    assert all(float(r["loss_image"]) > 0 for r in rows)  # the audio-image term is active
    assert float(rows[-1]["logit_scale"]) != pytest.approx(1 / 0.07, abs=1e-6)  # the temperature moved
    state = load_checkpoint(tmp_path / "enc_run" / "checkpoint.pt")
    assert state["step"] == 3 and "criterion.logit_scale.log_scale" in state["model"]
    with pytest.raises(ParameterError, match="cannot resume"):
        train(_config(assets, out, data=str(manifest), epochs=2, batch_size=4, resume=True))
    with pytest.raises(ParameterError, match="batch_size"):
        train(_config(assets, out, batch_size=1))
    with pytest.raises(ParameterError, match="template"):
        train(_config(assets, out, template="no placeholder"))
