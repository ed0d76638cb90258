"""Training building blocks: synthetic data, augmentation, losses, sampler (fast, no training run)."""

from __future__ import annotations

import hashlib
import math
import wave

import pytest
import torch
import torch.nn.functional as F

from sgim_nodes.errors import ParameterError
from sgim_nodes.train import augment, losses
from sgim_nodes.train.data import EpochBatchSampler, sample_generator
from sgim_nodes.train.synthetic import FAMILIES, make_dataset


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_synthetic_dataset_is_deterministic_and_split(tmp_path):
    a = make_dataset(tmp_path / "a", 4, classes=3, seed=7, seconds=0.5)
    b = make_dataset(tmp_path / "b", 4, classes=3, seed=7, seconds=0.5)
    c = make_dataset(tmp_path / "c", 4, classes=3, seed=8, seconds=0.5)
    assert _digest(a.parent) == _digest(b.parent) != _digest(c.parent)
    rows = a.read_text().splitlines()
    assert rows[0] == "audio,label,split" and len(rows) == 1 + 12
    splits = [r.split(",")[-1] for r in rows[1:]]
    assert splits.count("test") == 3 and splits.count("train") == 9  # one test clip per class
    with wave.open(str(a.parent / rows[1].split(",")[0])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16000, 1, 8000)


def test_synthetic_families_are_finite_loud_and_distinct():
    import numpy as np

    from sgim_nodes.train.synthetic import synthesize

    clips = {name: synthesize(name, np.random.default_rng(0), 8000, 1.0) for name in FAMILIES}
    for name, x in clips.items():
        assert x.shape == (8000,) and np.isfinite(x).all(), name
        assert 0.3 <= np.abs(x).max() <= 0.9, name
    names = list(clips)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(clips[a] - clips[b]).mean() > 0.01, (a, b)
    with pytest.raises(ParameterError, match="per_class"):
        make_dataset("/nonexistent", 1)


def test_spec_augment_masks_the_right_axes():
    mel = torch.ones(128, 864)
    g = torch.Generator().manual_seed(0)
    masked_rows = masked_cols = 0
    for _ in range(20):
        out = augment.spec_augment(mel, g)
        zero = out == 0
        full_rows = zero.all(dim=1).sum().item()  # a frequency mask zeroes whole mel rows
        full_cols = zero.all(dim=0).sum().item()  # a time mask zeroes whole frame columns
        # every zero belongs to a full row or a full column: masks are axis-aligned bands
        assert torch.equal(zero, zero.all(dim=1, keepdim=True) | zero.all(dim=0, keepdim=True))
        assert full_rows <= 2 * int(0.15 * 128) and full_cols <= 2 * int(0.3 * 864)
        masked_rows += full_rows
        masked_cols += full_cols
    assert masked_rows > 0 and masked_cols > 0
    # the caller's global RNG is untouched, and the same generator seed gives the same masks
    state = torch.get_rng_state()
    a = augment.spec_augment(mel, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, augment.spec_augment(mel, torch.Generator().manual_seed(5)))


def test_text_augmentation_is_offline_and_deterministic():
    variants = augment.text_variants("dog barking in the rain", 4, seed=0)
    assert variants[0] == "dog barking in the rain" and len(set(variants)) == len(variants) == 4
    assert variants == augment.text_variants("dog barking in the rain", 4, seed=0)
    assert variants != augment.text_variants("dog barking in the rain", 4, seed=1)
    import random

    words = "loud dog".split()
    swapped = augment.random_swap(words, random.Random(0))
    assert sorted(swapped) == sorted(words) and swapped == ["dog", "loud"]
    replaced = augment.synonym_replacement(["the", "dog"], random.Random(0))
    assert replaced[0] == "the" and replaced[1] in augment.SYNONYMS["dog"]
    inserted = augment.random_insertion(["rain"], random.Random(0))
    assert len(inserted) == 2 and (set(inserted) - {"rain"}) <= set(augment.SYNONYMS["rain"])
    assert augment.text_variants("xyzzy", 3, seed=0) == ["xyzzy"]  # nothing to augment: no fake variants


def test_info_nce_divides_by_temperature_and_is_symmetric():
    torch.manual_seed(0)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    scale = losses.LogitScale(0.07)()
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / 0.07
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert losses.symmetric_info_nce(a, b, scale).item() == pytest.approx(expected.item(), rel=1e-5)
    # perfectly aligned pairs give a much lower loss than shuffled ones
    assert losses.symmetric_info_nce(a, a, scale) < 0.1 < losses.symmetric_info_nce(a, a[torch.randperm(6)], scale)


def test_group_ids_make_duplicate_captions_positives():
    # two clips share caption 0: a text row identical for both must not count as a negative
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(1 / 0.07)
    plain = losses.symmetric_info_nce(audio, text, scale)
    grouped = losses.symmetric_info_nce(audio, text, scale, torch.tensor([0, 0, 1]))
    assert plain.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-4)  # rows 0/1 cannot tell their pair apart
    # with grouping, rows 0 and 1 target both duplicate columns: the minimum of the soft target CE is log(2)
    assert grouped.item() == pytest.approx(2 / 3 * math.log(2), abs=1e-4)
    worse = losses.symmetric_info_nce(audio[[2, 0, 1]], text, scale, torch.tensor([0, 0, 1]))
    assert worse > grouped + 1.0


def test_learnable_temperature_is_clamped_and_trainable():
    ls = losses.LogitScale(0.001, learnable=True)  # 1/tau = 1000 > 100
    assert ls().item() == pytest.approx(100.0)
    assert [n for n, _ in ls.named_parameters()] == ["log_scale"]
    fixed = losses.LogitScale()
    assert list(fixed.parameters()) == [] and "log_scale" in fixed.state_dict()


def test_contrastive_loss_terms_and_weights():
    torch.manual_seed(1)
    audio, text, aug = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    crit = losses.ContrastiveLoss(text_weight=1.0, self_weight=3.0)
    total, parts = crit(audio, text, torch.arange(4), aug)
    assert set(parts) == {"text", "self"}
    assert total.item() == pytest.approx((parts["text"] + 3 * parts["self"]) / 4, rel=1e-6)
    image_ids = torch.tensor([0, -1, 1, 2])  # clip 1 has no image: left out of the image term
    total, parts = crit(audio, text, torch.arange(4), aug, torch.randn(4, 8), image_ids)
    assert set(parts) == {"text", "self", "image"}
    with pytest.raises(ParameterError):
        losses.ContrastiveLoss(text_weight=0, self_weight=0, image_weight=0)(audio, text, None, aug)


def test_sampler_ranks_partition_the_single_process_batches():
    single = list(EpochBatchSampler(50, 8, seed=3, epoch=2))
    ranks = [list(EpochBatchSampler(50, 4, seed=3, epoch=2, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 6  # 50 // 8, incomplete batch dropped
    for step, batch in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == batch
    assert len({i for b in single for _, i in b}) == 48
    assert single != list(EpochBatchSampler(50, 8, seed=3, epoch=3))  # a new order every epoch
    resumed = EpochBatchSampler(50, 8, seed=3, epoch=2, start_batch=4)
    assert list(resumed) == single[4:] and len(resumed) == 2
    with pytest.raises(ParameterError, match="global batch of 64"):
        EpochBatchSampler(50, 32, world_size=2)


def test_sample_generator_depends_only_on_seed_epoch_index():
    a = torch.rand(3, generator=sample_generator(0, 1, 2))
    assert torch.equal(a, torch.rand(3, generator=sample_generator(0, 1, 2)))
    assert not torch.equal(a, torch.rand(3, generator=sample_generator(0, 2, 2)))
    assert not torch.equal(a, torch.rand(3, generator=sample_generator(1, 1, 2)))
