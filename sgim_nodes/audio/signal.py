"""Is there enough sound to embed? A check shared by the Embed Audio node and ``embed-audio``.

The encoder always returns a unit vector, even for digital silence or a click, so a near-silent or
very short clip gives a confident-looking target that means nothing. We measure the selection's
level and length and return a warning (never an error: a quiet recording may be intended).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Below this RMS level the spectrogram is dominated by the encoder's dB floor and dither-level noise.
QUIET_RMS_DBFS = -50.0
# A window is about 10 s and is zero-padded; under half a second most of it is padding.
SHORT_SECONDS = 0.5


@dataclass(frozen=True)
class SignalLevel:
    seconds: float
    rms_dbfs: float
    peak_dbfs: float

    def warning(self) -> str | None:
        """A one-line warning when the sound carries too little signal for a meaningful embedding."""
        problems = []
        if self.rms_dbfs < QUIET_RMS_DBFS:
            problems.append(f"near-silent: RMS level {self.rms_dbfs:.1f} dBFS (peak {self.peak_dbfs:.1f} dBFS), "
                            f"below {QUIET_RMS_DBFS:.0f} dBFS")
        if self.seconds < SHORT_SECONDS:
            problems.append(f"very short: {self.seconds:.2f} s, under {SHORT_SECONDS} s of a ~10 s window")
        if not problems:
            return None
        return "warning: the sound is " + " and ".join(problems) + "; its embedding will mean little"


def _dbfs(value: float) -> float:
    return 20 * math.log10(value) if value > 0 else -math.inf


def measure_signal(waveform: torch.Tensor, sample_rate: int, start_seconds: float | None = None,
                   end_seconds: float | None = None) -> SignalLevel:
    """Level and length of ``waveform`` ([T], [C, T] or [B, C, T], full scale 1.0) in the selected span;
    for a batch, the quietest and shortest clip counts."""
    x = waveform.detach().float()
    while x.dim() < 3:
        x = x[None]
    start = int(round((start_seconds or 0) * sample_rate))
    end = x.shape[-1] if not end_seconds else min(x.shape[-1], int(round(end_seconds * sample_rate)))
    x = x[..., start:max(start, end)]
    seconds = x.shape[-1] / sample_rate
    if x.shape[-1] == 0:
        return SignalLevel(seconds, -math.inf, -math.inf)
    rms = x.pow(2).mean(dim=(1, 2)).sqrt().min().item()  # quietest clip of the batch
    peak = x.abs().amax(dim=(1, 2)).min().item()
    return SignalLevel(seconds, _dbfs(rms), _dbfs(peak))
