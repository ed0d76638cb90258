"""Music videos: a sound-driven W+ trajectory, rendered to frames in sync with the track.

- :mod:`.timeline`   the frame-count rule (``round(duration * fps)``) and the audio that goes with frames;
- :mod:`.features`   per-frame loudness, onsets, centroid and band energies (streamed), and their plot;
- :mod:`.keyframes`  keyframe times and targets (sound, optionally a prompt schedule) and their codes;
- :mod:`.trajectory` the smooth, audio-reactive path through the keyframes (and StyleGAN3 motion);
- :mod:`.render`     frames in batches and the .mp4 writer with the track muxed in;
- :mod:`.cli`        ``python -m sgim_nodes animate``.
"""

from .features import FEATURE_NAMES, AudioFeatures, compute_features, features_of_file, features_of_waveform, plot_features
from .keyframes import (KeyframeSettings, Keyframes, keyframe_targets, keyframe_times, optimize_keyframes,
                        parse_prompt_schedule, prompt_at)
from .render import VideoWriter, iter_frames, resize, to_uint8
from .timeline import Timeline, make_timeline, trim_audio
from .trajectory import Trajectory, hermite_path, layer_drive, transform_matrix, uses_motion

__all__ = [
    "Timeline", "make_timeline", "trim_audio",
    "FEATURE_NAMES", "AudioFeatures", "compute_features", "features_of_file", "features_of_waveform", "plot_features",
    "KeyframeSettings", "Keyframes", "keyframe_times", "keyframe_targets", "optimize_keyframes",
    "parse_prompt_schedule", "prompt_at",
    "Trajectory", "hermite_path", "layer_drive", "transform_matrix", "uses_motion",
    "VideoWriter", "iter_frames", "resize", "to_uint8",
]
