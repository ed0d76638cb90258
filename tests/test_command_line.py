"""The command line as a new user meets it: help, outputs, run folders, model names, setup, CI and hygiene."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from sgim_nodes.__main__ import COMMANDS
from sgim_nodes.__main__ import main as cli
from sgim_nodes.demo import write_demo_models

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    paths = write_demo_models(root)
    paths["root"] = root
    return paths


def _edit(demo, out: Path, *extra: str) -> list[str]:
    return ["edit", "--text", "a rainy night", "--generator", str(demo["generator"]), "--clip", str(demo["clip"]),
            "--out", str(out), "--steps", "3", "--device", "cpu", *extra]


# ------------------------------------------------------------------------------ help

def test_help_of_every_command_imports_nothing_heavy_and_shows_defaults():
    """Timing is not asserted (a shared machine); what makes --help slow is importing torch & co, so the
    test asserts that none of them is imported while every command prints its help."""
    commands = [c for c in COMMANDS if c != "test"]
    script = f"""
import contextlib, io, json, sys
from sgim_nodes.__main__ import main
texts = {{}}
for command in {commands!r}:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([command, "--help"])
        except SystemExit:
            pass
    texts[command] = out.getvalue()
heavy = sorted(m for m in ("torch", "open_clip", "timm", "torchaudio", "torchvision", "av") if m in sys.modules)
print(json.dumps({{"heavy": heavy, "texts": texts}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SGIM_LAUNCHER": "./sgim"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["heavy"] == []
    texts = {command: " ".join(text.split()) for command, text in report["texts"].items()}  # unwrap lines
    for command, text in texts.items():
        assert text.startswith(f"usage: ./sgim {command}"), text[:200]
        assert "``" not in text and ":func:" not in text, f"{command}: raw markup in help"
    assert "(default: landscape)" in texts["edit"] and "lr 0.05" in texts["edit"]  # defaults and preset values
    assert "(default: 50)" in texts["train"] and "--overwrite" in texts["train"]


def test_usage_lists_every_command_including_test(capsys):
    assert cli(["--help"]) == 0
    usage = capsys.readouterr().out
    for command in ("edit", "test", "make-demo-models", "download"):
        assert re.search(rf"^  {command}\s", usage, re.M), command


# ------------------------------------------------------------------------------ edit outputs

@pytest.mark.parametrize("suffix,magic", [(".jpg", b"\xff\xd8\xff"), (".webp", b"RIFF"), (".png", b"\x89PNG")])
def test_out_extension_chooses_the_image_format(demo, tmp_path, suffix, magic):
    out = tmp_path / f"edit{suffix}"
    assert cli(_edit(demo, out)) == 0
    assert out.read_bytes().startswith(magic)
    assert (tmp_path / f"edit_source{suffix}").read_bytes().startswith(magic)


def test_out_extension_without_a_writer_is_refused_before_any_work(demo, tmp_path, capsys):
    assert cli(_edit(demo, tmp_path / "edit.gif")) == 1
    assert "--out" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_progress_bar_and_summary_report_the_same_per_edit_quantity(demo, tmp_path, capsys):
    """With a batch of 2 the bar must not show a sum while the summary shows a mean, and the summary's
    'after' is the CLIP distance of the written codes' images, not of the last step before its update."""
    from sgim_nodes.clip import load_clip
    from sgim_nodes.latents import load_wplus
    from sgim_nodes.optimize.objective import combine_targets, cosine_distance
    from sgim_nodes.stylegan import load_generator

    assert cli(_edit(demo, tmp_path / "e.png", "--batch", "2", "--seed", "5")) == 0
    captured = capsys.readouterr()
    # slow work is announced before it starts: loading, and the first step's warm-up
    assert captured.err.index("[sgim] loading generator") < captured.err.index("[sgim] loading CLIP") \
        < captured.err.index("[sgim] optimising (the first step also warms up") < captured.err.index("clip=")
    bar_last = float(re.findall(r"clip=([0-9.]+)", captured.err)[-1])
    before, after = (float(v) for v in re.search(r"\(mean per edit\): ([0-9.]+) -> ([0-9.]+)", captured.out).groups())
    generator = load_generator(demo["generator"])
    clip = load_clip(demo["clip"])
    ws, _, source_ws = load_wplus(tmp_path / "e_wplus.safetensors")
    target = clip.encode_text(["a rainy night"]).float()
    vector, offset = combine_targets(target)
    with torch.no_grad():
        def distance(codes):
            return cosine_distance(clip.image_features(generator.synthesis(codes)), vector, offset)

        written, source = distance(ws), distance(source_ws)
    assert written.shape == (2,)
    assert after == pytest.approx(written.mean().item(), abs=1e-4)
    assert before == pytest.approx(source.mean().item(), abs=1e-4)
    assert bar_last < 1.5 and bar_last == pytest.approx(after, abs=0.05)  # a mean per edit (a sum would be ~2)


@pytest.mark.parametrize("extra,message", [
    (["--mode", "generate", "--batch", "2"], "--batch: generate mode"),
    (["--mode", "generate", "--seed", "4"], "--seed: generate mode"),
    (["--source-latent", "{latent}", "--batch", "2"], "--batch: every code of the given source"),
    (["--source-latent", "{latent}", "--seed", "4"], "--seed: the given source W+"),
    (["--mask", ",".join(["0"] * 10)], "every layer is 0"),
    (["--mask", "1,1"], "2 values given, but the generator has 10"),
    (["--text", "b", "--weights", "1,-1"], "--weights: weights must be finite and >= 0"),
])
def test_options_that_would_be_ignored_or_are_inconsistent_are_errors(demo, tmp_path, capsys, extra, message):
    from sgim_nodes.latents import save_wplus

    latent = tmp_path / "src_wplus.safetensors"
    save_wplus(latent, torch.zeros(1, 10, 32), "landscape")
    extra = [e.format(latent=latent) for e in extra]
    assert cli(_edit(demo, tmp_path / "e.png", *extra)) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "e.png").exists()


# ------------------------------------------------------------------------------ embed-audio, train, evaluate

def test_embed_audio_finds_the_encoder_by_name_and_says_where_it_looked(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SGIM_MODELS_DIR", str(demo["root"]))
    assert cli(["embed-audio", str(demo["sound"]), "--encoder", "resnet18_57.pth", "--device", "cpu",
                "--clip", "ViT-B-32.pt", "--text", "rain", "wind"]) == 0
    printed = capsys.readouterr().out
    assert "embedding:  shape [32]" in printed and "similarity to prompts" in printed
    assert cli(["embed-audio", str(demo["sound"]), "--encoder", "nope.pth"]) == 1
    err = capsys.readouterr().err
    assert str(demo["root"] / "sgim_audio_encoders" / "nope.pth") in err


def test_training_first_run_from_demo_models_refuses_to_overwrite_and_evaluate_shows_progress(demo, tmp_path,
                                                                                            capsys):
    """The training README's first run, with the demo CLIP and no Python written (shortened: 2 steps)."""
    data = tmp_path / "synth"
    assert cli(["make-synthetic-dataset", str(data), "--per-class", "4", "--classes", "3", "--seed", "0"]) == 0
    out = tmp_path / "enc.safetensors"
    train = ["train", "--data", str(data), "--split", "train", "--clip", str(demo["clip"]), "--features", "compact",
             "--batch-size", "4", "--max-steps", "2", "--checkpoint-every", "1", "--no-progress", "--device", "cpu",
             "--out", str(out)]
    assert cli(train) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert cli(train) == 1  # the run folder holds a finished run: refused, nothing touched
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and out.read_bytes() == first
    assert cli(train + ["--overwrite", "--seed", "1"]) == 0
    assert out.read_bytes() != first

    capsys.readouterr()
    assert cli(["evaluate", "--encoder", str(out), "--clip", str(demo["clip"]), "--data", str(data),
                "--no-probe", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "[sgim] loading audio encoder" in captured.err and "embedding clips" in captured.err
    assert "zero-shot top-1" in captured.out


LOADER_FOLDERS = {"SGIMLoadStyleGAN": "stylegan", "SGIMLoadCLIP": "sgim_clip", "SGIMLoadAudioEncoder": "sgim_audio_encoders",
                  "SGIMLoadIdentityModel": "sgim_identity", "SGIMLoadVGG": "sgim_vgg"}


def example_model_files() -> set[tuple[str, str]]:
    """(folder key, file name) of every loader of every example workflow."""
    import json

    files = set()
    for path in (REPO / "example_workflows").glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] in LOADER_FOLDERS:
                files.add((LOADER_FOLDERS[node["type"]], node["widgets_values"][0]))
    return files


def test_demo_models_stand_in_for_every_file_every_example_names(demo):
    from sgim_nodes.audio import load_audio_encoder
    from sgim_nodes.clip import load_clip
    from sgim_nodes.optimize import load_id_model
    from sgim_nodes.project.distance import load_vgg16_features
    from sgim_nodes.stylegan import load_generator

    wanted = example_model_files()
    assert {folder for folder, _ in wanted} == set(LOADER_FOLDERS.values())  # all five loaders are used
    missing = [f"{folder}/{name}" for folder, name in wanted if not (demo["root"] / folder / name).is_file()]
    assert not missing, f"make-demo-models does not write {missing}"
    loaders = {"stylegan": load_generator, "sgim_clip": load_clip, "sgim_audio_encoders": load_audio_encoder,
               "sgim_identity": load_id_model, "sgim_vgg": load_vgg16_features}
    for folder, name in sorted(wanted):  # each loads with the loader its node uses
        assert loaders[folder](demo["root"] / folder / name) is not None
    face = load_generator(demo["face_generator"])
    assert face.resolution == 64 and face.family == "stylegan2"


# ------------------------------------------------------------------------------ setup, CI, hygiene

def test_first_run_setup_keeps_torch_and_fetches_companions_of_the_same_build():
    from sgim_nodes.bootstrap import install_command

    assert install_command("2.14.1+cu130", []) is None
    assert install_command(None, ["torch", "torchaudio", "torchvision"]) == ["torch", "torchaudio", "torchvision"]
    # companions pinned to torch's exact release pairing AND its local tag: the cu130 index also lists
    # torchaudio 2.11.1+cu132, which an unpinned request picked beside torch 2.14.1+cu130
    assert install_command("2.14.1+cu130", ["torchaudio"]) == [
        "torchaudio==2.11.0+cu130", "torch==2.14.1+cu130", "--index-url", "https://download.pytorch.org/whl/cu130"]
    assert install_command("2.14.1+cpu", ["torchaudio", "torchvision"])[:2] == [
        "torchaudio==2.11.0+cpu", "torchvision==0.29.1+cpu"]
    assert install_command("2.5.1", ["torchaudio", "torchvision"]) == [
        "torchaudio==2.5.1", "torchvision==0.20.1", "torch==2.5.1"]
    assert install_command("2.99.0+cu200", ["torchaudio"])[0] == "torchaudio"  # unknown release: pip, then checked
    from sgim_nodes.bootstrap import mismatched_builds

    assert mismatched_builds({"torch": "2.14.1+cu130", "torchaudio": "2.11.1+cu132"}) == ["torchaudio 2.11.1+cu132"]
    assert mismatched_builds({"torch": "2.14.1+cu130", "torchaudio": "2.11.0+cu130",
                              "torchvision": "0.29.1+cu130"}) == []
    assert mismatched_builds({"torch": "2.14.1", "torchaudio": "2.11.0", "torchvision": "0.28.0"}) == [
        "torchvision 0.28.0"]
    assert mismatched_builds({"torch": "2.99.0+cu200", "torchaudio": "2.40.0+cu201"}) == ["torchaudio 2.40.0+cu201"]
    launcher = (REPO / "sgim").read_text()
    assert "sgim_nodes.bootstrap" in launcher and "pip install -q torch torchaudio" not in launcher


def test_missing_shared_fixtures_fail_under_ci(tmp_path):
    env = {**os.environ, "CI": "true", "SGIM_SHARED_DIR": str(tmp_path / "absent")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_audio_decode.py", "-k", "drill_is_24_bit"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "CI=true, so this fails instead of skipping" in done.stdout


def test_skipped_integration_tests_fail_under_ci_and_skip_with_the_reason_outside():
    base = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_DIR", "CI")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/integration/test_comfyui_server.py", "-k", "object_info_lists_every_node"]
    outside = subprocess.run(command, cwd=REPO, env=base, capture_output=True, text=True, timeout=300)
    assert outside.returncode == 0 and "1 skipped" in outside.stdout, outside.stdout[-2000:]
    assert "integration tests need a ComfyUI checkout: set COMFYUI_DIR" in outside.stdout
    in_ci = subprocess.run(command, cwd=REPO, env={**base, "CI": "true"}, capture_output=True, text=True, timeout=300)
    assert in_ci.returncode == 1, in_ci.stdout[-2000:]
    assert "integration test skipped under CI=true (integration tests need a ComfyUI checkout" in in_ci.stdout


def test_ci_skip_rule_lets_a_stated_reason_through(monkeypatch):
    import importlib.util

    # by path: "conftest" may name tests/integration/conftest.py in this session
    spec = importlib.util.spec_from_file_location("sgim_tests_conftest", REPO / "tests" / "conftest.py")
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    ci_skip_verdict = rules.ci_skip_verdict
    monkeypatch.setenv("CI", "true")
    assert "CI must run it" in ci_skip_verdict(True, None, "no COMFYUI_DIR")
    assert ci_skip_verdict(True, "frontend 1.27 has no subgraphs", "no subgraphs") is None
    assert "CI must run it" in ci_skip_verdict(True, "  ", "x")  # an empty reason states nothing
    assert ci_skip_verdict(False, None, "no CUDA") is None  # unit tests keep their own skips
    monkeypatch.setenv("CI", "false")
    assert ci_skip_verdict(True, None, "no COMFYUI_DIR") is None


def _source_files() -> list[Path]:
    files = [p for p in REPO.rglob("*") if p.suffix in (".py", ".js", ".sh") and ".venv" not in p.parts
             and ".git" not in p.parts]
    return files + [REPO / "sgim", REPO / ".ci" / "run"]


def test_comments_do_not_point_at_documents_outside_the_repository():
    pattern = re.compile(r"\bissue\s*#?\d|\bguides?\s*§|§\s*\d", re.I)
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in _source_files()
                 for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
                 if pattern.search(line) and p.name != "test_command_line.py"]
    assert offenders == []


def test_every_third_party_import_of_the_library_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ]", d)[0].lower().replace("-", "_")
                for d in project["dependencies"] + project["optional-dependencies"]["standalone"]}
    requirements = {re.split(r"[<>=!~\[ ]", line)[0].lower().replace("-", "_")
                    for line in (REPO / "requirements.txt").read_text().splitlines() if line and line[0].isalpha()}
    distribution = {"open_clip": "open_clip_torch", "PIL": "pillow", "av": "av"}
    imported = set()
    for path in (REPO / "sgim_nodes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    optional = {"pytest", "tensorboard", "torch_utils", "dnnlib"}  # test runner; optional logger; pickle names
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "sgim_nodes"} - optional
    missing = {m for m in third_party if distribution.get(m, m).lower() not in declared}
    assert missing == set()
    assert "timm" in third_party and "timm" in requirements  # the audio encoder builds its backbone with timm
