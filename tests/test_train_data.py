"""Dataset readers, clear errors for bad manifests/labels, bad audio handling, the feature cache."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from sgim_nodes.errors import ParameterError
from sgim_nodes.train import data as D
from sgim_nodes.train.synthetic import write_wav


def _wav(path, seconds=0.5, sr=16000, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    write_wav(path, 0.5 * np.sin(2 * np.pi * freq * t), sr)
    return path


def _write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _compact():
    from sgim_nodes.train.loop import TrainConfig

    return TrainConfig(data="", clip="", out="", features="compact").feature_settings()


def test_manifest_reader_and_its_errors(tmp_path):
    _wav(tmp_path / "a.wav")
    m = _write_csv(tmp_path / "m.csv", ["audio", "label", "caption", "image", "split", "fold"],
                   [["a.wav", "dog_bark", "", "", "train", "2"], ["a.wav", "", "a dog barks", "img.png", "test", ""]])
    samples, layout = D.read_dataset(m)
    assert layout == "manifest" and len(samples) == 2
    assert samples[0].audio == tmp_path / "a.wav" and samples[0].label == "dog bark" and samples[0].fold == 2
    assert samples[0].text("the sound of {}") == "the sound of dog bark" and samples[0].text() == "dog bark"
    assert samples[1].text("the sound of {}") == "a dog barks" and samples[1].image == tmp_path / "img.png"

    bad = _write_csv(tmp_path / "nocol.csv", ["path", "label"], [["a.wav", "x"]])
    with pytest.raises(ParameterError, match=r"nocol\.csv: missing column 'audio'"):
        D.read_manifest(bad)
    bad = _write_csv(tmp_path / "notext.csv", ["audio", "split"], [["a.wav", "train"]])
    with pytest.raises(ParameterError, match=r"missing column 'caption' or 'label'"):
        D.read_manifest(bad)
    bad = _write_csv(tmp_path / "empty.csv", ["audio", "label"], [["a.wav", "x"], ["", "y"]])
    with pytest.raises(ParameterError, match=r"empty\.csv:3: empty 'audio' cell"):
        D.read_manifest(bad)
    bad = _write_csv(tmp_path / "fold.csv", ["audio", "label", "fold"], [["a.wav", "x", "one"]])
    with pytest.raises(ParameterError, match=r"fold\.csv:2: column 'fold' must be an integer"):
        D.read_manifest(bad)
    with pytest.raises(ParameterError, match="not found"):
        D.read_dataset(tmp_path / "missing.csv")


def test_esc50_urbansound_vggsound_and_folder_layouts(tmp_path):
    esc = tmp_path / "ESC-50"
    _write_csv(esc / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
               [["1-1-A-0.wav", "1", "0", "dog", "True", "1", "A"], ["2-1-A-1.wav", "2", "1", "crying_baby", "False", "1", "A"]])
    samples, layout = D.read_dataset(esc)
    assert layout == "esc50" and [s.label for s in samples] == ["dog", "crying baby"]
    assert [s.fold for s in samples] == [1, 2] and samples[0].audio == esc / "audio" / "1-1-A-0.wav"

    us = tmp_path / "UrbanSound8K"
    _write_csv(us / "metadata" / "UrbanSound8K.csv",
               ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
               [["100032-3-0-0.wav", "100032", "0", "0.3", "1", "5", "3", "dog_bark"]])
    samples, layout = D.read_dataset(us)
    assert layout == "urbansound8k" and samples[0].audio == us / "audio" / "fold5" / "100032-3-0-0.wav"
    assert samples[0].label == "dog bark" and samples[0].fold == 5

    vgg = tmp_path / "vgg"
    _wav(vgg / "clips" / "abc_000030.wav")
    _write_csv(vgg / "vggsound.csv", None, [["abc", "30", "dog barking", "train"], ["zzz", "0", "rain", "test"]])
    samples, layout = D.read_dataset(vgg / "vggsound.csv", audio_dir=vgg / "clips")
    assert layout == "vggsound" and samples[0].audio == vgg / "clips" / "abc_000030.wav"
    assert samples[0].split == "train" and not samples[1].audio.exists()  # missing download: a bad sample later
    _write_csv(vgg / "short.csv", None, [["abc", "30"]])
    with pytest.raises(ParameterError, match=r"short\.csv:1: expected 'youtube_id,start_seconds,label"):
        D.read_vggsound(vgg / "short.csv")

    folders = tmp_path / "folders"
    _wav(folders / "church_bells" / "x.wav")
    _wav(folders / "rain" / "y.flac".replace(".flac", ".wav"))
    (folders / "rain" / "notes.txt").write_text("not audio")
    samples, layout = D.read_dataset(folders)
    assert layout == "folders" and [s.label for s in samples] == ["church bells", "rain"]


def test_unknown_labels_and_missing_splits_are_clear_errors(tmp_path):
    _wav(tmp_path / "a.wav")
    m = _write_csv(tmp_path / "m.csv", ["audio", "label", "split"], [["a.wav", "dog", "train"], ["a.wav", "cat", "train"]])
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\nbird\n")
    samples, _ = D.read_dataset(m)
    with pytest.raises(ParameterError, match=r"m\.csv:3: unknown label 'cat' \(known classes: bird, dog\)"):
        D.check_labels(samples, D.read_classes_file(classes))
    with pytest.raises(ParameterError, match="split='test'.*dataset has: train"):
        D.select(samples, split="test")


def test_dataset_skips_unreadable_and_empty_audio(tmp_path):
    good = _wav(tmp_path / "good.wav")
    text = tmp_path / "text.wav"
    text.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0), 16000)
    samples = [D.Sample(audio=p, label="x") for p in (good, text, empty, tmp_path / "missing.wav")]
    ds = D.AudioTextDataset(samples, [0] * 4, [[0]], settings=_compact(), seed=0)
    item = ds[(0, 0)]
    assert item["audio"].shape == (1, 32, 64) == item["audio_aug"].shape
    assert torch.isfinite(item["audio"]).all() and not torch.equal(item["audio"], item["audio_aug"])
    for i in (1, 2, 3):
        bad = ds[(0, i)]
        assert isinstance(bad, D.BadSample) and bad.index == i and str(samples[i].audio) == bad.path
    assert "no samples" in ds[(0, 2)].reason or "zero-length" in ds[(0, 2)].reason
    batch = D.collate([ds[(0, i)] for i in range(4)])
    assert batch["size"] == 1 and [b.index for b in batch["bad"]] == [1, 2, 3]
    assert batch["audio"].shape == (1, 1, 32, 64)


def test_draws_are_reproducible_and_the_feature_cache_is_used(tmp_path, monkeypatch):
    clip = _wav(tmp_path / "long.wav", seconds=3.0)  # longer than the 64-frame window: random crops
    settings = _compact()
    kwargs = dict(settings=settings, seed=1, text_aug_prob=0.5, cache_dir=tmp_path / "cache")
    ds = D.AudioTextDataset([D.Sample(audio=clip, label="x")], [0], [[0, 1, 2]], **kwargs)
    first = ds[(0, 0)]
    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 1
    # a fresh dataset reads the spectrogram from disk (decoding is made impossible) and draws identically
    monkeypatch.setattr(D, "compute_mel", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = D.AudioTextDataset([D.Sample(audio=clip, label="x")], [0], [[0, 1, 2]], **kwargs)
    second = again[(0, 0)]
    assert torch.equal(first["audio"], second["audio"]) and torch.equal(first["audio_aug"], second["audio_aug"])
    assert first["text_row"] == second["text_row"]
    others = [again[(e, 0)] for e in range(1, 8)]
    assert any(not torch.equal(o["audio"], first["audio"]) for o in others)  # other epochs: other crops
    assert {o["text_row"] for o in others} - {0}  # some draws use augmented captions
    # the cache key changes with the file: an edited file is decoded again
    _wav(clip, seconds=2.0, freq=880.0)
    with pytest.raises(AssertionError, match="decoded again"):
        D.AudioTextDataset([D.Sample(audio=clip, label="x")], [0], [[0]], **kwargs)[(0, 0)]


def test_text_and_image_embeddings_are_computed_once_and_cached_on_disk(tmp_path):
    calls, image_calls = [], []

    class FakeClip:
        name = "fake"

        class model:  # noqa: N801 - stands in for an nn.Module
            @staticmethod
            def state_dict():
                return {"w": torch.ones(2)}

        def encode_text(self, texts):
            calls.append(list(texts))
            return torch.nn.functional.normalize(torch.randn(len(texts), 4), dim=-1)

        def encode_image(self, images):
            image_calls.append(tuple(images.shape))
            return torch.nn.functional.normalize(images.mean(dim=(1, 2)), dim=-1)  # [B, 3]

    samples = [D.Sample(audio=tmp_path / f"{i}.wav", label=l) for i, l in enumerate(["dog", "rain", "dog", "rain"])]
    table, caption_ids, images, image_ids = D.build_targets(samples, "the sound of {}", text_variants_count=2)
    assert table.captions == ["the sound of dog", "the sound of rain"] and caption_ids == [0, 1, 0, 1]
    assert images == [] and image_ids == [-1] * 4
    emb = table.embed(FakeClip(), cache_dir=tmp_path)
    assert emb.shape == (len(table.texts), 4) and len(calls) == 1 and len(calls[0]) == len(table.texts)
    again = D.TextTable(table.captions, 2).embed(FakeClip(), cache_dir=tmp_path)
    assert len(calls) == 1 and torch.equal(emb, again)  # second time from the disk cache
    json.dumps(table.texts)

    from PIL import Image

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, p in enumerate(paths):
        Image.fromarray(np.full((8, 12, 3), 100 * i + 20, np.uint8)).save(p)
    first = D.embed_images(FakeClip(), paths, cache_dir=tmp_path)
    assert image_calls == [(1, 8, 12, 3)] * 2 and first.shape == (2, 3)
    assert torch.equal(D.embed_images(FakeClip(), paths, cache_dir=tmp_path), first) and len(image_calls) == 2
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(paths[1])  # an edited image invalidates the entry
    D.embed_images(FakeClip(), paths, cache_dir=tmp_path)
    assert len(image_calls) == 4
