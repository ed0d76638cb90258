"""Audio side of SGIM: decoding, the paper's spectrogram preprocessing, the audio encoder.

Public API (imported lazily so that ``import sgim_nodes.audio`` does not pull in timm or torchaudio):

- ``load_audio(path) -> (waveform [C, T] float32, sample_rate)``              (:mod:`.decode`)
- ``FeatureSettings``, ``PAPER_SETTINGS``, ``paper_input``, ``mel_db``, ``to_model_input``,
  ``fit_frames``, ``random_crop_offset``, ``iter_windows``                      (:mod:`.features`)
- ``build_audio_encoder``, ``load_audio_encoder``, ``save_audio_encoder``, ``embed_audio``,
  ``check_compatible``, ``AudioEncoder``                                      (:mod:`.encoder`)
- ``measure_signal(waveform, rate) -> SignalLevel`` (``.warning()`` for near-silent/short sound) (:mod:`.signal`)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_audio": ".decode",
    "FeatureSettings": ".features",
    "PAPER_SETTINGS": ".features",
    "LIBROSA_CURRENT_SETTINGS": ".features",
    "paper_input": ".features",
    "mel_db": ".features",
    "to_model_input": ".features",
    "fit_frames": ".features",
    "random_crop_offset": ".features",
    "iter_windows": ".features",
    "AudioEncoder": ".encoder",
    "build_audio_encoder": ".encoder",
    "load_audio_encoder": ".encoder",
    "save_audio_encoder": ".encoder",
    "embed_audio": ".encoder",
    "check_compatible": ".encoder",
    "measure_signal": ".signal",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
