"""Writes ``assets/rain.wav``: 4 s of synthetic rain (numpy only), the sound of the README's first command.

Rain = a bed of low-passed noise (the hiss of many far drops) plus a few hundred near drops, each a
short noise burst with a fast exponential decay and its own brightness and loudness. Fixed seed:
running this again writes the same bytes.

    python assets/make_rain.py [OUT.wav]
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

RATE = 22050
SECONDS = 4.0
SEED = 20261207


def one_pole_lowpass(x: np.ndarray, alpha: float) -> np.ndarray:
    """y[n] = y[n-1] + alpha (x[n] - y[n-1]), as a recursive filter without scipy."""
    y = np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):
        acc += alpha * (v - acc)
        y[i] = acc
    return y


def rain(rng: np.random.Generator) -> np.ndarray:
    n = int(RATE * SECONDS)
    bed = one_pole_lowpass(rng.standard_normal(n), 0.35)
    bed -= one_pole_lowpass(bed, 0.01)  # remove the rumble under ~35 Hz
    out = 0.25 * bed / np.abs(bed).max()
    for _ in range(int(90 * SECONDS)):  # near drops
        length = int(rng.uniform(0.004, 0.03) * RATE)
        start = rng.integers(0, n - length)
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 5))
        if rng.random() < 0.5:  # duller drops (on leaves, soil)
            burst = one_pole_lowpass(burst, 0.2)
        out[start:start + length] += rng.uniform(0.05, 0.4) * burst / np.abs(burst).max()
    fade = int(0.05 * RATE)  # no click at either end
    out[:fade] *= np.linspace(0, 1, fade)
    out[-fade:] *= np.linspace(1, 0, fade)
    return 0.8 * out / np.abs(out).max()


def write(path: Path) -> None:
    pcm = np.round(rain(np.random.default_rng(SEED)) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("rain.wav"))
