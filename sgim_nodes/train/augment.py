"""Training-time augmentation: SpecAugment on mel spectrograms and offline text augmentation.

SpecAugment (Park et al. 2019) as the paper describes it: ``num_masks`` frequency masks of up to
15 % of the mel bins and ``num_masks`` time masks of up to 30 % of the frames, with torchaudio's
``FrequencyMasking`` / ``TimeMasking``. It is applied to the ``[n_mels, frames]`` dB spectrogram
window BEFORE the resize/reshape to the model input, so "frequency" really means mel bins and
"time" really means frames (the released code applied them after the resize, on swapped axes).
Masked cells get 0.0, the -80 dB floor of the ``dB/80 + 1`` scale.

Text augmentation is the EDA trio the paper used (synonym replacement, random swap, random
insertion), but with a small built-in synonym table instead of WordNet, so it needs no download.
It runs OFFLINE: each caption gets a few fixed variants before training, so the frozen CLIP text
embeddings of every variant are computed once (see ``data.TextTable``).

Randomness always comes from an explicit generator (``torch.Generator`` / ``random.Random``), so a
sample's augmentation depends only on (seed, epoch, index): that is what lets ``--resume`` and
any number of DataLoader workers reproduce a run exactly.
"""

from __future__ import annotations

import random

import torch

FREQ_MASK_RATIO = 0.15
TIME_MASK_RATIO = 0.3


def spec_augment(mel: torch.Tensor, generator: torch.Generator, *, num_masks: int = 2,
                 freq_ratio: float = FREQ_MASK_RATIO, time_ratio: float = TIME_MASK_RATIO) -> torch.Tensor:
    """A masked copy of ``mel`` ([n_mels, frames] or [C, n_mels, frames]).

    torchaudio's maskers draw from the global torch RNG; we fork it and seed it from ``generator``
    so the caller's RNG stream is untouched and the result is reproducible.
    """
    import torchaudio.transforms as T

    n_mels, frames = mel.shape[-2], mel.shape[-1]
    freq_mask = T.FrequencyMasking(freq_mask_param=max(1, int(freq_ratio * n_mels)))
    time_mask = T.TimeMasking(time_mask_param=max(1, int(time_ratio * frames)))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    out = mel.clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(num_masks):
            out = freq_mask(out)  # masks along dim -2: mel bins
            out = time_mask(out)  # masks along dim -1: frames
    return out


# A small table of everyday sound words. Symmetric use: any word of a group may be replaced by
# another of the same group. Enough for the EDA operations to do something sensible offline.
SYNONYM_GROUPS: list[list[str]] = [
    ["sound", "noise", "audio"],
    ["rain", "rainfall", "downpour", "drizzle"],
    ["raining", "pouring", "drizzling"],
    ["thunder", "thunderclap", "rumble"],
    ["thunderstorm", "storm", "tempest"],
    ["wind", "breeze", "gust", "gale"],
    ["fire", "blaze", "flames"],
    ["explosion", "blast", "detonation", "bang"],
    ["dog", "puppy", "hound"],
    ["bark", "barking", "woof"],
    ["cat", "kitten", "kitty"],
    ["bird", "songbird", "sparrow"],
    ["chirp", "tweet", "chirping"],
    ["car", "automobile", "vehicle"],
    ["engine", "motor"],
    ["siren", "alarm"],
    ["horn", "honk"],
    ["drill", "jackhammer", "power drill"],
    ["baby", "infant", "toddler"],
    ["crying", "sobbing", "weeping", "wailing"],
    ["laughing", "giggling", "chuckling"],
    ["talking", "speaking", "chatting"],
    ["music", "melody", "tune"],
    ["water", "stream", "brook"],
    ["waves", "surf", "breakers"],
    ["footsteps", "steps", "walking"],
    ["knock", "knocking", "tapping"],
    ["door", "doorway", "gate"],
    ["clock", "ticking", "tick"],
    ["bell", "chime", "ring"],
    ["loud", "noisy", "booming"],
    ["quiet", "soft", "faint"],
    ["low", "deep", "bass"],
    ["high", "shrill", "sharp"],
    ["tone", "pitch", "note"],
    ["rising", "ascending", "climbing"],
    ["falling", "descending", "dropping"],
    ["hiss", "hissing", "sizzle"],
    ["click", "clicking", "tick"],
    ["buzz", "buzzing", "hum", "drone"],
    ["tremolo", "wavering", "pulsing"],
]

SYNONYMS: dict[str, list[str]] = {}
for _group in SYNONYM_GROUPS:
    for _word in _group:
        SYNONYMS.setdefault(_word, [])
        SYNONYMS[_word] += [w for w in _group if w != _word and w not in SYNONYMS[_word]]

STOP_WORDS = frozenset("a an the of and or in on at to with for by from is are".split())


def synonym_replacement(words: list[str], rng: random.Random, n: int = 1) -> list[str]:
    """Replace up to ``n`` words that have a synonym in the table (stop words kept)."""
    words = list(words)
    candidates = [i for i, w in enumerate(words) if w.lower() in SYNONYMS and w.lower() not in STOP_WORDS]
    rng.shuffle(candidates)
    for i in candidates[:n]:
        words[i] = rng.choice(SYNONYMS[words[i].lower()])
    return words


def random_swap(words: list[str], rng: random.Random, n: int = 1) -> list[str]:
    """Swap two random positions ``n`` times (no-op for one-word captions)."""
    words = list(words)
    for _ in range(n if len(words) > 1 else 0):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def random_insertion(words: list[str], rng: random.Random, n: int = 1) -> list[str]:
    """Insert a synonym of a random word at a random position, ``n`` times."""
    words = list(words)
    for _ in range(n):
        with_synonyms = [w for w in words if w.lower() in SYNONYMS]
        if not with_synonyms:
            break
        words.insert(rng.randint(0, len(words)), rng.choice(SYNONYMS[rng.choice(with_synonyms).lower()]))
    return words


def augment_text(text: str, rng: random.Random) -> str:
    """The released recipe's order: synonym replacement, then random swap, then random insertion."""
    words = text.split()
    words = synonym_replacement(words, rng)
    words = random_swap(words, rng)
    words = random_insertion(words, rng)
    return " ".join(words)


def text_variants(text: str, count: int, seed: int) -> list[str]:
    """``text`` itself followed by up to ``count - 1`` distinct augmented variants (deterministic)."""
    rng = random.Random(f"{seed}:{text}")
    variants = [text]
    for _ in range(4 * count):  # a few tries: short captions have few distinct variants
        if len(variants) >= count:
            break
        candidate = augment_text(text, rng)
        if candidate not in variants:
            variants.append(candidate)
    return variants
