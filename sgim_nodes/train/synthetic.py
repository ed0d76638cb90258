"""A small synthetic sound-class dataset in the manifest format, for tests and a first run.

``python -m sgim_nodes make-synthetic-dataset OUT --per-class N`` writes ``OUT/audio/<class>/*.wav``
(16-bit PCM, mono, 16 kHz by default: cheap to write and decode; the front end resamples to
44.1 kHz like any other file) and ``OUT/manifest.csv`` with the columns ``audio,label,split``.

Every class is a distinct family of sounds whose parameters (pitch, rate, bandwidth, loudness,
onset, length) are drawn at random per clip, so a model has to learn the family, not one waveform.
The same ``--seed`` always gives byte-identical files. Each class gets ``round(N * test_fraction)``
test clips (at least one) and the rest train clips.
"""

from __future__ import annotations

import csv
import math
import wave
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ParameterError

Synth = Callable[[np.random.Generator, int, int], np.ndarray]


def _time(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _pure_tone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    f = rng.uniform(300.0, 1500.0)
    return np.sin(2 * math.pi * f * _time(n, sr) + rng.uniform(0, 2 * math.pi))


def _chirp(rng: np.random.Generator, n: int, sr: int, rising: bool) -> np.ndarray:
    lo, hi = rng.uniform(200.0, 600.0), rng.uniform(2500.0, 6000.0)
    f0, f1 = (lo, hi) if rising else (hi, lo)
    t = _time(n, sr)
    duration = n / sr
    # Phase of a linear sweep f(t) = f0 + (f1 - f0) t / T.
    phase = 2 * math.pi * (f0 * t + 0.5 * (f1 - f0) * t * t / duration)
    return np.sin(phase)


def _band_noise(rng: np.random.Generator, n: int, sr: int, lo_hz: float, hi_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spectrum[(freqs < lo_hz) | (freqs > hi_hz)] = 0.0
    x = np.fft.irfft(spectrum, n)
    return x / (np.abs(x).max() + 1e-12)


def _low_rumble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _band_noise(rng, n, sr, 20.0, rng.uniform(150.0, 300.0))


def _high_hiss(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    nyquist = sr / 2
    return _band_noise(rng, n, sr, nyquist * rng.uniform(0.5, 0.6), nyquist)


def _click_train(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    x = np.zeros(n)
    period = int(sr / rng.uniform(4.0, 12.0))
    click = np.hanning(max(8, sr // 500)) * np.sign(rng.standard_normal(max(8, sr // 500)))
    for start in range(int(rng.integers(0, period)), n - len(click), period):
        x[start:start + len(click)] += click
    return x


def _tremolo_tone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = _time(n, sr)
    carrier = np.sin(2 * math.pi * rng.uniform(400.0, 1200.0) * t)
    return carrier * (0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(3.0, 8.0) * t))


def _harmonic_buzz(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = _time(n, sr)
    f0 = rng.uniform(80.0, 200.0)
    harmonics = [np.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 16) if k * f0 < sr / 2]
    return np.sum(harmonics, axis=0)


# Class name -> generator. Names are plain words so that they also make sensible text prompts.
FAMILIES: dict[str, Synth] = {
    "pure tone": _pure_tone,
    "rising chirp": lambda rng, n, sr: _chirp(rng, n, sr, rising=True),
    "falling chirp": lambda rng, n, sr: _chirp(rng, n, sr, rising=False),
    "low rumble": _low_rumble,
    "high hiss": _high_hiss,
    "click train": _click_train,
    "tremolo tone": _tremolo_tone,
    "harmonic buzz": _harmonic_buzz,
}


def synthesize(family: str, rng: np.random.Generator, sample_rate: int, seconds: float) -> np.ndarray:
    """One clip of ``family``: float64 in [-1, 1], random loudness, a short silent lead-in."""
    n = int(round(seconds * sample_rate))
    onset = int(rng.integers(0, max(1, n // 10)))
    body = FAMILIES[family](rng, n - onset, sample_rate)
    body = body / (np.abs(body).max() + 1e-12) * rng.uniform(0.3, 0.9)
    fade = min(len(body) // 2, sample_rate // 100)  # 10 ms fades: no clicks at the edges
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        body[:fade] *= ramp
        body[-fade:] *= ramp[::-1]
    return np.concatenate([np.zeros(onset), body])


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV with the standard library (no extra dependency)."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def make_dataset(out_dir: str | Path, per_class: int = 24, *, classes: int | None = None, seed: int = 0,
                 sample_rate: int = 16000, seconds: float = 1.0, test_fraction: float = 0.25) -> Path:
    """Write the dataset and return the manifest path (``OUT/manifest.csv``)."""
    if per_class < 2:
        raise ParameterError(f"per_class: need at least 2 clips per class (one train, one test), got {per_class}")
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    names = list(FAMILIES)
    if classes is not None:
        if not 2 <= classes <= len(names):
            raise ParameterError(f"classes: expected 2..{len(names)}, got {classes}")
        names = names[:classes]
    if not 0.1 <= seconds <= 30.0 or sample_rate < 8000:
        raise ParameterError(f"seconds/sample_rate: expected 0.1-30 s at >= 8000 Hz, got {seconds} s at {sample_rate} Hz")
    out_dir = Path(out_dir)
    n_test = min(per_class - 1, max(1, round(per_class * test_fraction)))
    rows = []
    for class_index, name in enumerate(names):
        # One generator per class: adding classes or clips never changes the existing ones.
        rng = np.random.default_rng([seed, class_index])
        folder = name.replace(" ", "_")
        for i in range(per_class):
            rel = Path("audio") / folder / f"{folder}_{i:04d}.wav"
            write_wav(out_dir / rel, synthesize(name, rng, sample_rate, seconds), sample_rate)
            split = "test" if i >= per_class - n_test else "train"
            rows.append({"audio": rel.as_posix(), "label": name, "split": split})
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["audio", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from ..cli_help import command_parser

    parser = command_parser("make-synthetic-dataset", __doc__, full_doc=True)
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--per-class", type=int, default=24, help="clips per class")
    parser.add_argument("--classes", type=int, default=None, help=f"number of classes, 2-{len(FAMILIES)} (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the sounds and the split")
    parser.add_argument("--sample-rate", type=int, default=16000, help="Hz")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of every clip")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="share of each class in the test split")
    args = parser.parse_args(argv)
    manifest = make_dataset(args.out, args.per_class, classes=args.classes, seed=args.seed,
                            sample_rate=args.sample_rate, seconds=args.seconds, test_fraction=args.test_fraction)
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    from ..errors import run_command

    raise SystemExit(run_command(main))
