"""Music video: audio features -> keyframes -> per-frame W+ trajectory -> frames (+ the audio cut to the
same span, and the frame rate) for core Create Video / Save Video. The job is sgim_nodes.jobs.music_video;
one frame-count rule (sgim_nodes.animate.timeline) serves the features, the codes, the frames and the audio.

    SGIM_AUDIO_FEATURES  MusicFeatures: AudioFeatures (timeline + per-frame curves) + the AUDIO
    SGIM_KEYFRAMES       MusicKeyframes: Keyframes (times, codes, source) + MusicFeatures
    SGIM_WPLUS from Music Trajectory carries "animation": {"chunk": TrajectoryChunk, "audio": AUDIO}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..sgim_nodes.jobs.music_video import check_audio
from ..sgim_nodes.options import node_inputs
from .host import (CATEGORY_ROOT, check_wplus, job_run, library_errors, models_on_device, node_error, on_device,
                   outputs, sockets, to_comfy_image, torch_device, wplus_value)


@dataclass(frozen=True)
class MusicFeatures:
    features: object  # sgim_nodes.animate.AudioFeatures
    audio: dict  # the core AUDIO they were computed from (not copied, never modified)


@dataclass(frozen=True)
class MusicKeyframes:
    keyframes: object  # sgim_nodes.animate.Keyframes
    music: MusicFeatures


class SGIMAudioFeatures:
    DESCRIPTION = ("Per-frame audio features of a track at a frame rate: loudness, onsets (spectral flux), "
                   "brightness (spectral centroid) and low/mid/high band energies, smoothed with a centred "
                   "window (no lag) and scaled to 0..1. Feeds Music Keyframes; the curves are also plain "
                   "float lists (one value per frame) for other packs, and a plot.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("features", "SGIM_AUDIO_FEATURES", "Features and timeline for Music Keyframes."),
        ("loudness", "FLOAT", "Loudness (RMS) per frame, a list of floats in 0..1."),
        ("onset", "FLOAT", "Onset strength (spectral flux) per frame, 0..1."),
        ("centroid", "FLOAT", "Brightness (spectral centroid) per frame, 0..1."),
        ("low", "FLOAT", "Bass energy (20-250 Hz) per frame, 0..1."),
        ("mid", "FLOAT", "Mid energy (250-2000 Hz) per frame, 0..1."),
        ("high", "FLOAT", "Treble energy (2-11 kHz) per frame, 0..1."),
        ("plot", "IMAGE", "The curves as an image (onsets marked)."),
        ("frame_count", "INT", "Frames of the video: round((end - start) x fps)."),
        ("json", "STRING", "Everything as JSON (fps, start, frames, curves, onset times)."))
    FUNCTION = "analyse"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The track (core AUDIO, e.g. from Load Audio); the first clip of a batch."}),
            **node_inputs("music", "fps", "start_seconds", "end_seconds", "smoothing_seconds", tooltips={
                "start_seconds": "Start the video at this second of the track.",
                "end_seconds": "End at this second (0 = the end of the track)."}),
        }}

    def analyse(self, audio, fps=24.0, start_seconds=0.0, end_seconds=0.0, smoothing_seconds=0.1):
        from ..sgim_nodes.animate import features_of_waveform, make_timeline, plot_features

        with library_errors(self):
            waveform, rate = check_audio(audio)
            timeline = make_timeline(waveform.shape[-1] / rate, fps, start_seconds, end_seconds or None)
            features = features_of_waveform(waveform[0], rate, timeline, smoothing_seconds)
        plot = torch.from_numpy(plot_features(features).astype("float32") / 255.0)[None]
        curves = [list(features.values[name]) for name in ("loudness", "onset", "centroid", "low", "mid", "high")]
        return (MusicFeatures(features, audio), *curves, plot, timeline.frames, features.to_json())


class SGIMMusicKeyframes:
    DESCRIPTION = ("Semantic keyframes of a music video: every keyframe_seconds (optionally moved onto onsets), "
                   "the sound around that moment (one encoder window, centred) and optionally a prompt "
                   "schedule become a target, and the optimiser turns it into a W+ code - the first from the "
                   "source with 'steps', each next one warm-started from the previous with 'keyframe_steps'. "
                   "Live preview; Cancel stops within one step.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("keyframes", "SGIM_KEYFRAMES", "Keyframe times and codes, for Music Trajectory."),
        ("keyframe_log", "STRING", "Keyframe times and targets as JSON."))
    FUNCTION = "optimize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **sockets("generator", "clip", "audio_encoder",
                          clip="The CLIP model of the audio encoder's space (From Load CLIP)."),
                "features": ("SGIM_AUDIO_FEATURES", {"tooltip": "From Audio Features (the track and its timeline)."}),
                **sockets("source", source="The image the video starts from (Source Latent); first code."),
                **node_inputs("music", "keyframe_seconds"),
                "snap_to_onsets": ("BOOLEAN", {"default": False, "tooltip":
                    "Move each keyframe onto the nearest detected onset (within half an interval)."}),
                **node_inputs("music", "steps", "keyframe_steps", "lr", "lambda_sim"),
                "prompt_schedule": ("STRING", {"default": "", "multiline": True, "tooltip":
                    "Optional text mixed into the targets: one prompt, or a schedule "
                    "'0: a calm sea | 12.5: a storm at sea' (seconds of the track)."}),
                **node_inputs("music", "text_weight", "preview_every"),
            },
            "optional": {
                **sockets("layer_mask"),
                "follow": (["optimise", "instant"], {"default": "optimise", "tooltip":
                    "optimise: keyframes every keyframe_seconds by the optimiser; instant: no optimisation, a "
                    "keyframe every follow_seconds that follows its own moment's sound through instant edits "
                    "(the generator's analysis, cached; steps, lr and lambda_sim are then unused)."}),
                **node_inputs("music", "follow_seconds", "alpha", "beta", tooltips={
                    "alpha": "instant: strength (as Instant Edit's alpha).",
                    "beta": "instant: relevance threshold (as Instant Edit's beta)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def optimize(self, generator, clip, audio_encoder, features, source, keyframe_seconds=4.0, snap_to_onsets=False,
                 steps=100, keyframe_steps=30, lr=0.1, lambda_sim=0.002, prompt_schedule="", text_weight=0.3,
                 preview_every=10, layer_mask=None, follow="optimise", follow_seconds=0.25, alpha=1.0, beta=0.1,
                 unique_id=None):
        from ..sgim_nodes.jobs.music_video import KeyframesRequest, TrackAudio, run_keyframes

        source_ws = check_wplus(source, generator, self, "source")[:1]
        with library_errors(self):
            waveform, rate = check_audio(features.audio)
        g, c, encoder = models_on_device([generator, clip, audio_encoder], torch_device())
        with job_run(self, unique_id) as run:
            result = run_keyframes(KeyframesRequest(
                g, c, encoder, features.features, TrackAudio.of_waveform(waveform[0], rate), source_ws,
                keyframe_seconds=keyframe_seconds, snap_to_onsets=snap_to_onsets, steps=steps,
                keyframe_steps=keyframe_steps, lr=lr, lambda_sim=lambda_sim,
                layer_weights=layer_mask.layer_mask() if layer_mask is not None else None, prompts=prompt_schedule,
                text_weight=text_weight, preview_every=preview_every, follow=follow, follow_seconds=follow_seconds,
                alpha=alpha, beta=beta), run)
        timeline = features.features.timeline
        log = json.dumps({"fps": timeline.fps, "frames": timeline.frames,
                          "keyframes": [{"seconds": t, "frame": round(t * timeline.fps), "target": label}
                                        for t, label in zip(result.times, result.labels)]})
        return (MusicKeyframes(result.keyframes, features), log)


class SGIMMusicTrajectory:
    DESCRIPTION = ("The W+ code of every video frame: a smooth path through the keyframes (cubic Hermite, no "
                   "jumps) that pulses with loudness and onsets (reactivity); with band_layers the bass drives "
                   "the coarse layers and the highs the fine ones. frame_offset / frame_count render a long "
                   "song in chunks. StyleGAN3 generators also rotate and shift slowly with the music.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("wplus", "SGIM_WPLUS", "One W+ code per frame of the chunk, for Decode Frames."),
        ("frame_count", "INT", "Frames in this chunk."))
    FUNCTION = "trajectory"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "keyframes": ("SGIM_KEYFRAMES", {"tooltip": "From Music Keyframes."}),
            **node_inputs("music", "reactivity"),
            "band_layers": ("BOOLEAN", {"default": True, "tooltip":
                "Bass drives the coarse layers (layout), mids the middle ones, highs the fine ones (texture)."}),
            **node_inputs("music", "rotation_degrees", "translation", "frame_offset", "frame_count"),
        }}

    def trajectory(self, keyframes, reactivity=0.5, band_layers=True, rotation_degrees=4.0, translation=0.05,
                   frame_offset=0, frame_count=0):
        from ..sgim_nodes.animate import trim_audio
        from ..sgim_nodes.jobs.music_video import TrajectoryRequest, chunk_codes, plan_trajectory

        music = keyframes.music
        with library_errors(self):
            chunk = plan_trajectory(TrajectoryRequest(keyframes.keyframes, music.features, reactivity, band_layers,
                                                      rotation_degrees, translation, frame_offset, frame_count))
            ws = chunk_codes(chunk)
            waveform, rate = check_audio(music.audio)
        audio = {"waveform": trim_audio(waveform[:1], rate, chunk.trajectory.timeline, chunk.offset, chunk.count),
                 "sample_rate": rate}
        value = wplus_value(ws, keyframes.keyframes.generator)
        value["animation"] = {"chunk": chunk, "audio": audio}
        return (value, chunk.count)


class SGIMDecodeFrames:
    DESCRIPTION = ("Renders the frames of a Music Trajectory in batches (bounded memory; Cancel stops within a "
                   "batch) and hands on the audio cut to exactly the same span and the frame rate, so that core "
                   "Create Video + Save Video give a video in sync with the track.")
    CATEGORY = f"{CATEGORY_ROOT}/music video"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = outputs(
        ("images", "IMAGE", "The frames, IMAGE [frames, H, W, 3]."),
        ("audio", "AUDIO", "The track cut to exactly frames / fps seconds."),
        ("fps", "FLOAT", "Frames per second, for Create Video."))
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": ("SGIM_STYLEGAN", {"tooltip": "The generator the codes belong to."}),
                "wplus": ("SGIM_WPLUS", {"tooltip": "From Music Trajectory."}),
                **node_inputs("music", "batch_size", "size"),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def decode(self, generator, wplus, batch_size=8, size=0, unique_id=None):
        from ..sgim_nodes.jobs.music_video import FramesRequest, iter_video_frames

        animation = wplus.get("animation") if isinstance(wplus, dict) else None
        if animation is None:
            raise node_error(self, "wplus", "expected the codes of a Music Trajectory (they carry the frame timing "
                                            "and the audio); for other W+ codes use StyleGAN Decode")
        ws = check_wplus(wplus, generator, self, "wplus")
        chunk = animation["chunk"]
        g = on_device(generator, torch_device())
        with job_run(self, unique_id, free_cache=False) as run:
            frames = [to_comfy_image(images) for _, images in
                      iter_video_frames(FramesRequest(g, chunk, batch_size, size, codes=ws), run)]
        return (torch.cat(frames), animation["audio"], float(chunk.trajectory.timeline.fps))
