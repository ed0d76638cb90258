"""Zero-shot / linear-probe evaluation: metrics, the torch probe, fold protocol, released .pth format."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from sgim_nodes import evaluate as E
from sgim_nodes.errors import ParameterError
from sgim_nodes.train.synthetic import FAMILIES, synthesize, write_wav


def test_topk_accuracy():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.5, 0.4]])
    targets = torch.tensor([0, 1, 2])
    assert E.topk_accuracy(logits, targets, 1) == pytest.approx(100 / 3)
    assert E.topk_accuracy(logits, targets, 2) == pytest.approx(100.0)
    assert E.topk_accuracy(logits, targets, 5) == pytest.approx(100.0)  # k clipped to the class count


def test_probe_separates_separable_features_and_generalises():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 3
    labels = torch.arange(5).repeat(20)
    feats = centres[labels] + torch.randn(100, 16, generator=g)
    test_labels = torch.arange(5).repeat(10)
    test_feats = centres[test_labels] + torch.randn(50, 16, generator=g)
    probe = E.train_probe(feats, labels, 5)
    assert E.topk_accuracy(E.probe_logits(probe, test_feats), test_labels, 1) >= 96.0
    shuffled = E.train_probe(feats, labels[torch.randperm(100, generator=g)], 5)  # labels carry no signal
    assert E.topk_accuracy(E.probe_logits(shuffled, test_feats), test_labels, 1) < 60.0
    with torch.inference_mode():  # ComfyUI-style caller: the probe still trains
        inside = E.train_probe(feats, labels, 5)
    assert torch.allclose(inside[0], probe[0])


def test_zero_shot_logits_are_cosines():
    audio = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(E.zero_shot_logits(audio, text), torch.eye(2))


@pytest.fixture(scope="module")
def esc50_like(tmp_path_factory):
    """An ESC-50 layout (meta/esc50.csv + audio/): 3 synthetic classes, one clip per class in each of 2 folds."""
    root = tmp_path_factory.mktemp("esc")
    rows = []
    for c, family in enumerate(list(FAMILIES)[:3]):
        rng = np.random.default_rng(c)
        for i in range(2):
            name = f"{i % 2 + 1}-{c}{i}-A-{c}.wav"
            write_wav(root / "audio" / name, synthesize(family, rng, 16000, 0.5), 16000)
            rows.append([name, str(i % 2 + 1), str(c), family.replace(" ", "_"), "False", "x", "A"])
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


def _tiny_clip(tmp_path, embed_dim):
    from sgim_nodes.clip import build_tiny_clip, save_open_clip_state_dict, tiny_clip_config

    name = f"sgim-test-eval-clip-{embed_dim}"
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(tiny_clip_config(embed_dim)))
    save_open_clip_state_dict(build_tiny_clip(embed_dim, seed=0, name=name), tmp_path / f"{name}.safetensors")
    return tmp_path / f"{name}.safetensors", config, name


def test_released_pth_format_per_fold_table_and_json(esc50_like, tmp_path, capsys):
    """The official layout (.pth state dict with 'module.' keys, paper preprocessing) evaluated per fold."""
    from sgim_nodes.audio import build_audio_encoder

    torch.manual_seed(0)
    encoder = build_audio_encoder("resnet18", 512).eval()
    pth = tmp_path / "resnet18_57.pth"
    torch.save({f"module.{k}": v for k, v in encoder.state_dict().items()}, pth)
    clip, config, name = _tiny_clip(tmp_path, 512)
    out = tmp_path / "res.json"
    assert E.main(["--encoder", str(pth), "--clip", str(clip), "--clip-config", str(config), "--clip-model", name,
                   "--data", str(esc50_like), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["layout"] == "esc50" and result["template"] == "{}"  # no recorded template: the bare label
    assert result["classes"] == ["falling chirp", "pure tone", "rising chirp"] and result["top_k"] == 3
    assert [r["name"] for r in result["rows"]] == ["fold 1", "fold 2"]
    for row in result["rows"]:
        assert row["clips"] == 3 and row["probe_train_clips"] == 3
        assert 0.0 <= row["zero_shot_top1"] <= row["zero_shot_top3"] == 100.0  # top-3 of 3 classes
    mean = (result["rows"][0]["zero_shot_top1"] + result["rows"][1]["zero_shot_top1"]) / 2
    assert result["mean"]["zero_shot_top1"] == pytest.approx(mean)
    assert "fold 1" in printed and "mean" in printed and f"{mean:.1f}" in printed
    assert "paper reports 57.8 % zero-shot top-1" in printed and "not measured here" in printed


def test_template_override_dimension_mismatch_and_missing_split(esc50_like, tmp_path):
    from sgim_nodes.audio import build_audio_encoder, save_audio_encoder

    encoder = build_audio_encoder("resnet18", 16, clip_model="x")
    path = tmp_path / "enc16.safetensors"
    save_audio_encoder(encoder, path)
    clip, config, name = _tiny_clip(tmp_path, 32)
    with pytest.raises(ParameterError, match="do not match"):
        E.evaluate(str(path), str(clip), str(esc50_like), clip_model=name, clip_config=str(config), probe=False)
    with pytest.raises(ParameterError, match="folds"):
        E.evaluate(str(path), str(clip), str(esc50_like), clip_model=name, clip_config=str(config), folds=[7])
    encoder.config["prompt_template"] = "the sound of {}"
    save_audio_encoder(encoder, path)
    assert E.recorded_template(path) == "the sound of {}"
