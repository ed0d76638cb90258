"""Music videos: a sound-driven W+ trajectory, rendered to frames in sync with the track.

- :mod:`.timeline`   the frame-count rule (``round(duration * fps)``) and the audio that goes with frames;
- :mod:`.features`   per-frame loudness, onsets, centroid and band energies (streamed), and their plot;
- :mod:`.keyframes`  keyframe times and targets (sound, optionally a prompt schedule) and their codes;
- :mod:`.trajectory` the smooth, audio-reactive path through the keyframes (and StyleGAN3 motion);
- :mod:`.render`     frames in batches and the .mp4 writer with the track muxed in;
- :mod:`.beats`      tempo, beat tracking, keyframes on beats and bars, beat pulses;
- :mod:`.segments`   rendering straight to a file in closed-GOP segments (resumable, shared by torchrun ranks);
- :mod:`.distributed` the processes torchrun starts, and what they swap;
- :mod:`.flicker`    frame-to-frame change against W+ change, and its figure;
- :mod:`.cli`        ``python -m sgim_nodes animate``.
"""

# Names are imported from their modules on first use (PEP 562), so that ``animate --help`` and the
# defaults do not import torch.
from ..lazy import lazy_exports

_EXPORTS = {
    "timeline": ["Timeline", "make_timeline", "trim_audio"],
    "features": ["FEATURE_NAMES", "AudioFeatures", "compute_features", "features_of_file", "features_of_waveform",
                 "plot_features"],
    "keyframes": ["KeyframeSettings", "Keyframes", "keyframe_times", "keyframe_targets", "optimize_keyframes",
                  "parse_prompt_schedule", "prompt_at"],
    "trajectory": ["Trajectory", "hermite_path", "layer_drive", "transform_matrix", "uses_motion"],
    "render": ["VideoWriter", "iter_frames", "resize", "to_uint8"],
    "beats": ["Beats", "track_beats", "with_beats", "keyframe_times_for", "beat_pulses"],
    "segments": ["render_to_file"],
    "flicker": ["FlickerStats", "measure_flicker", "flicker_of_video", "plot_flicker"],
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
