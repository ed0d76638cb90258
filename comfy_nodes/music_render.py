"""Music videos at scale from the graph: a trajectory straight into an .mp4 handed on as a core VIDEO,
tempo and beats as values, and a folder of songs. The jobs are sgim_nodes.jobs.music_graph / music_render."""

from __future__ import annotations

import os
import types

import torch

from ..sgim_nodes.options import node_input, node_inputs

from .host import (CATEGORY_ROOT, check_wplus, job_run, library_errors, models_on_device, node_error,
                   output_directory, torch_device)

CATEGORY = f"{CATEGORY_ROOT}/music video"
CORRECTIONS = (["none", "double", "half"], {"default": "none", "tooltip": "Detected tempo x2 or /2 (octave errors)."})
BPM = node_input("bpm", "music")
# the shared bounds (sgim_nodes.options), as Decode Frames and Music Keyframes have them
BATCH = node_input("batch_size", "music")
CRF = node_input("crf", "music")
SIZE = node_input("size", "music")
# library parameter -> node input, merged into host.INPUT_FOR_PARAMETER by nodes.py
INPUT_FOR_PARAMETER = {"SGIMRenderMusicVideo": {"codes": "wplus", "out": "filename_prefix", "*": "wplus"},
                       "SGIMTempoBeats": {"*": "features"}, "SGIMMusicFolder": {
                           "audio": "folder", "out": "output_folder", "batch": "batch_size",
                           "prompts": "prompt_schedule", "*": "folder"}}


def video_from_file(path: str):
    """Core VIDEO backed by ``path`` (ComfyUI's VideoFromFile: Save Video copies its streams, no re-encoding)."""
    try:
        from comfy_api.latest import InputImpl  # type: ignore[import-not-found]
    except ImportError:  # unit tests, without ComfyUI: a stand-in that knows its file
        return types.SimpleNamespace(path=path, get_stream_source=lambda: path)
    return InputImpl.VideoFromFile(path)


def input_directory() -> str:
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:  # as host.output_directory() without ComfyUI
        return os.path.join(os.getcwd(), "input")
    return folder_paths.get_input_directory()


def _ui_video(path) -> dict:
    subfolder = os.path.relpath(path.parent, output_directory())
    return {"images": [{"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}],
            "animated": (True,)}


class SGIMRenderMusicVideo:
    DESCRIPTION = ("A Music Trajectory straight into a new .mp4 with the track in the output folder (one batch of "
                   "frames in memory: hours fit), handed on as a core VIDEO for Save Video. Cancel leaves no half "
                   "file; a rerun continues from the finished 10-second segments.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO", "STRING", "INT")
    RETURN_NAMES = ("video", "filename", "frame_count")
    OUTPUT_TOOLTIPS = ("The video file as core VIDEO.", "Its path under the output folder.", "Frames in it.")
    FUNCTION = "render"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("SGIM_STYLEGAN", {"tooltip": "The codes' generator."}), "batch_size": BATCH, "crf": CRF, "size": SIZE,
            "wplus": ("SGIM_WPLUS", {"tooltip": "From Music Trajectory (a chunk renders as its own video)."}),
            "filename_prefix": ("STRING", {"default": "sgim/music_video", "tooltip":
                "folder/name under the output folder; a counter is added (name_00001.mp4)."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def render(self, generator, wplus, batch_size=8, crf=18, size=0, filename_prefix="sgim/music_video",
               unique_id=None):
        from ..sgim_nodes.jobs.music_graph import ChunkRenderRequest, next_video_path, run_chunk_render

        animation = wplus.get("animation") if isinstance(wplus, dict) else None
        if animation is None:
            raise node_error(self, "wplus", "expected the codes of a Music Trajectory (timing and audio)")
        ws = check_wplus(wplus, generator, self, "wplus")
        with library_errors(self):
            out = next_video_path(output_directory(), filename_prefix)  # a bad prefix: refused before any work
        g, = models_on_device([generator], torch_device())
        with job_run(self, unique_id, free_cache=False) as run:
            result = run_chunk_render(ChunkRenderRequest(g, animation["chunk"], animation["audio"], out, batch_size,
                                                         crf, size or None, codes=ws), run)
        return {"ui": _ui_video(result.path), "result": (
            video_from_file(str(result.path)), os.path.relpath(result.path, output_directory()), result.frames)}


class SGIMTempoBeats:
    DESCRIPTION = ("Tempo (BPM) and beat times of Audio Features (dynamic-programming beat tracking) for other "
                   "nodes, and the features plot with the beats ticked along the top.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("FLOAT", "FLOAT", "INT", "STRING", "IMAGE")
    RETURN_NAMES = ("tempo", "beat_times", "beat_count", "json", "plot")
    OUTPUT_TOOLTIPS = ("BPM.", "Beat times, seconds from the features' start.", "Beats.", "All as JSON.", "Plot.")
    FUNCTION = "beats"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"features": ("SGIM_AUDIO_FEATURES", {"tooltip": "From Audio Features."}),
                             "bpm": BPM, "tempo_correction": CORRECTIONS}}

    def beats(self, features, bpm=0.0, tempo_correction="none"):
        from ..sgim_nodes.animate import plot_features
        from ..sgim_nodes.jobs.music_graph import tempo_and_beats

        with library_errors(self):
            report = tempo_and_beats(features.features, bpm, tempo_correction)
        plot = torch.from_numpy(plot_features(report.features).astype("float32") / 255.0)[None]
        return (report.tempo, report.times, len(report.times), report.to_json(), plot)


class SGIMMusicFolder:
    DESCRIPTION = ("One music video per song of a folder under the input folder (or one file per line) into "
                   "output_folder. Tracks whose video exists are skipped (rerun to resume); a failing track is "
                   "reported and the rest go on.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("report", "videos")
    OUTPUT_TOOLTIPS = ("What happened to each track.", "The videos' paths under the output folder, one per line.")
    FUNCTION = "render"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "generator": ("SGIM_STYLEGAN", {"tooltip": "From Load StyleGAN."}),
            "clip": ("SGIM_CLIP", {"tooltip": "From Load CLIP."}),
            "audio_encoder": ("SGIM_AUDIO_ENCODER", {"tooltip": "From Load Audio Encoder."}),
            "folder": ("STRING", {"default": "album", "multiline": True, "tooltip":
                "A folder under the input folder, or one audio file per line (relative to it)."}),
            "output_folder": ("STRING", {"default": "sgim/album", "tooltip": "Under the output folder."}),
            "fps": node_input("fps", "music"),
            "keyframes": ("STRING", {"default": "beats:8", "tooltip": "beats:N, bars:N or seconds:N."}),
            "bpm": BPM, "tempo_correction": CORRECTIONS,
            **node_inputs("music", "steps", "keyframe_steps", "reactivity", "beat_weight"),
            "prompt_schedule": ("STRING", {"default": "", "multiline": True, "tooltip": "As in Music Keyframes."}),
            "text_weight": node_input("text_weight", "music"),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Random source (no source input)."}),
            "batch_size": BATCH, "crf": CRF, "size": SIZE,
        }, "optional": {"source": ("SGIM_WPLUS", {"tooltip": "The image every video starts from."})},
            "hidden": {"unique_id": "UNIQUE_ID"}}

    def render(self, generator, clip, audio_encoder, folder, output_folder, fps, keyframes, bpm, tempo_correction,
               steps, keyframe_steps, reactivity, beat_weight, prompt_schedule, text_weight, seed, batch_size, crf,
               size, source=None, unique_id=None):
        options = dict(fps=fps, keyframes=keyframes, bpm=bpm, tempo_correction=tempo_correction, steps=steps,
                       keyframe_steps=keyframe_steps, reactivity=reactivity, beat_weight=beat_weight, seed=seed,
                       prompt_schedule=prompt_schedule, text_weight=text_weight, batch_size=batch_size, crf=crf,
                       size=size)
        from ..sgim_nodes.jobs.music_graph import FolderRequest, run_folder_render
        from ..sgim_nodes.jobs.music_render import Models

        source_ws = None if source is None else check_wplus(source, generator, self, "source")[:1]
        models = Models(*models_on_device([generator, clip, audio_encoder], torch_device()))
        with job_run(self, unique_id) as run:
            summary, videos = run_folder_render(FolderRequest(models, folder, input_directory(), output_directory(),
                                                              output_folder, options, source_ws), run)
        return {"ui": {"text": [summary.describe()]}, "result": (summary.describe(), "\n".join(videos))}
