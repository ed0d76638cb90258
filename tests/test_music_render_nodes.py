"""The file-backed music-video nodes without ComfyUI: Render Music Video (a chunk straight into a new .mp4 with its
audio, cancel leaves no file and a rerun resumes, changed codes refused, flat memory over a 10-minute track),
Tempo and Beats (a click track's tempo and beats as values) and Music Videos from a Folder (one video per
track, the broken one reported, resumable, absurd inputs refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_animate import RATE, click_track, decoded_frames, write_wav
from test_animate_nodes import keyframes_of, track  # noqa: F401
from test_music_beats import clicks_at
from test_music_folder import album
from test_nodes import FakeInterrupt, comfy_base, errors, fake_comfy, models, nodes, pack, run  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trajectory_of(nodes, models, track, **chunk):
    *_, keyframes, _ = keyframes_of(nodes, models, track)
    settings = dict(reactivity=0.5, band_layers=True, rotation_degrees=4.0, translation=0.05, frame_offset=0,
                    frame_count=0)
    settings.update(chunk)
    wplus, count = run("SGIMMusicTrajectory", nodes, keyframes=keyframes, **settings)
    return wplus, count


def render(nodes, models, wplus, prefix="sgim/mv", **options):
    settings = dict(batch_size=8, crf=18, size=0, filename_prefix=prefix, unique_id="41")
    settings.update(options)
    return run("SGIMRenderMusicVideo", nodes, generator=models.generator, wplus=wplus, **settings)


def test_render_node_writes_every_frame_and_the_audio_and_hands_on_a_video(nodes, models, track, comfy_base,
                                                                         fake_comfy):
    from sgim_nodes.animate.render import video_frame_count

    base, _ = comfy_base
    wplus, count = trajectory_of(nodes, models, track)
    assert count == 175  # 7.3 s at 24 fps
    out = render(nodes, models, wplus)
    video, name, frames = out["result"]
    assert name == "sgim/mv_00001.mp4" and frames == 175
    path = base / "output" / name
    assert video.get_stream_source() == str(path)
    assert out["ui"]["images"] == [{"filename": "mv_00001.mp4", "subfolder": "sgim", "type": "output"}]
    frames_in_file, video_s, audio_s = video_frame_count(path)
    assert frames_in_file == 175 and abs(video_s - 175 / 24) < 1e-3 and abs(audio_s - 175 / 24) < 0.03
    # progress counts frames of this video, with previews
    assert [p[0] for p in fake_comfy.progress][-1] == 175 and fake_comfy.previews
    # the frames of the trajectory the codes came from: as the library renders them, bit for bit
    segments = sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".sgim_nodes.animate.segments"]
    library = segments.render_to_file(models.generator, wplus["animation"]["chunk"].trajectory,
                                      base / "library.mp4", batch_size=8, crf=18)
    assert np.array_equal(decoded_frames(path), decoded_frames(library))
    library.unlink()
    # a second render never overwrites the first; nothing of the render is left beside the videos
    _, second, _ = render(nodes, models, wplus)["result"]
    assert second == "sgim/mv_00002.mp4" and path.is_file()
    assert sorted(p.name for p in (base / "output" / "sgim").iterdir()) == ["mv_00001.mp4", "mv_00002.mp4"]

    # a chunk is a video of its own: its frames, its audio
    chunk, n = trajectory_of(nodes, models, track, frame_offset=48, frame_count=60)
    _, name, frames = render(nodes, models, chunk, prefix="sgim/chunk", size=16)["result"]
    frames_in_file, video_s, audio_s = video_frame_count(base / "output" / name)
    assert n == frames == frames_in_file == 60 and abs(audio_s - 2.5) < 0.03
    assert decoded_frames(base / "output" / name).shape == (60, 16, 16, 3)


def test_render_node_cancel_leaves_no_video_and_a_rerun_resumes(nodes, models, track, comfy_base, fake_comfy,
                                                                monkeypatch):
    base, _ = comfy_base
    music_graph = sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".sgim_nodes.jobs.music_graph"]
    monkeypatch.setattr(music_graph, "SEGMENT_SECONDS", 2.0)  # segments of 48 frames (12 batches of 4)
    wplus, _ = trajectory_of(nodes, models, track)
    fake_comfy.progress.clear()
    fake_comfy.checks, fake_comfy.interrupt_at = 0, 20
    with pytest.raises(FakeInterrupt):
        render(nodes, models, wplus, prefix="cancel/mv", batch_size=4)
    folder = base / "output" / "cancel"
    assert not [p for p in folder.iterdir() if p.is_file()]  # no half file, no temporary
    done = [p[0] for p in fake_comfy.progress]
    assert done and done[-1] < 175
    fake_comfy.progress.clear()
    fake_comfy.interrupt_at = None
    _, name, frames = render(nodes, models, wplus, prefix="cancel/mv", batch_size=4)["result"]
    assert name == "cancel/mv_00001.mp4" and frames == 175
    resumed = [p[0] for p in fake_comfy.progress]
    assert resumed[0] == 48 and resumed[-1] == 175  # the finished first segment was kept
    assert [p.name for p in folder.iterdir()] == ["mv_00001.mp4"]  # the segments went with the join


def test_render_node_refuses_what_it_cannot_render_naming_the_input(nodes, models, track, errors, fake_comfy):
    wplus, _ = trajectory_of(nodes, models, track)
    plain, = run("SGIMSourceLatent", nodes, generator=models.generator, seed=4, truncation_psi=0.7, mode="random",
                 batch_size=1)
    with pytest.raises(errors.ParameterError, match="Render Music Video, input 'wplus'.*Music Trajectory"):
        render(nodes, models, plain)
    changed = dict(wplus, ws=wplus["ws"] + 0.5)
    with pytest.raises(errors.ParameterError, match="Render Music Video, input 'wplus'.*changed after"):
        render(nodes, models, changed)
    for prefix in ("../outside", "/abs/name", "sgim/"):
        with pytest.raises(errors.ParameterError, match="Render Music Video, input 'filename_prefix'"):
            render(nodes, models, wplus, prefix=prefix)
    with pytest.raises(errors.ParameterError, match="Render Music Video, input 'size'"):
        render(nodes, models, wplus, size=6)


def test_tempo_and_beats_of_a_click_track(nodes, fake_comfy, errors):
    clicks = clicks_at(128.0, 20.0)
    audio = {"waveform": click_track(20.0, clicks=clicks, rate=22050, channels=1)[None], "sample_rate": 22050}
    features, *_ = run("SGIMAudioFeatures", nodes, audio=audio, fps=24.0, start_seconds=0.0, end_seconds=0.0,
                       smoothing_seconds=0.0)
    tempo, times, count, text, plot = run("SGIMTempoBeats", nodes, features=features, bpm=0.0,
                                          tempo_correction="none")
    assert abs(tempo - 128.0) / 128.0 < 0.02
    assert count == len(times) and abs(count - len(clicks)) <= 2
    assert all(min(abs(t - c) for c in clicks) <= 1.5 / 24 for t in times)  # each beat within a frame of a click
    saved = json.loads(text)
    assert saved["beat_count"] == count and saved["beat_times"] == [round(t, 6) for t in times]
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.dtype == torch.float32
    plain = run("SGIMAudioFeatures", nodes, audio=audio, fps=24.0, start_seconds=0.0, end_seconds=0.0,
                smoothing_seconds=0.0)[7]
    assert not torch.equal(plot, plain)  # the beats are drawn
    doubled, *_ = run("SGIMTempoBeats", nodes, features=features, bpm=0.0, tempo_correction="double")
    assert abs(doubled - 256.0) / 256.0 < 0.02
    manual, _, manual_count, _, _ = run("SGIMTempoBeats", nodes, features=features, bpm=100.0,
                                        tempo_correction="none")
    assert manual == 100.0 and manual_count < count
    with pytest.raises(errors.ParameterError, match="Tempo and Beats, input 'bpm'"):
        run("SGIMTempoBeats", nodes, features=features, bpm=5.0, tempo_correction="none")
    with pytest.raises(errors.ParameterError, match="Tempo and Beats, input 'tempo_correction'"):
        run("SGIMTempoBeats", nodes, features=features, bpm=0.0, tempo_correction="triple")


FOLDER = dict(fps=12.0, keyframes="seconds:2", bpm=0.0, tempo_correction="none", steps=2, keyframe_steps=1,
              reactivity=0.5, beat_weight=0.0, prompt_schedule="", text_weight=0.3, seed=3, batch_size=4, crf=18,
              size=0, unique_id="51")


def test_folder_node_renders_each_track_reports_the_broken_one_and_resumes(nodes, models, comfy_base, errors,
                                                                         fake_comfy, monkeypatch):
    from sgim_nodes.animate.render import video_frame_count

    base, _ = comfy_base
    album(base / "input" / "album")

    def folder_run(folder, out, **options):
        return run("SGIMMusicFolder", nodes, generator=models.generator, clip=models.clip,
                   audio_encoder=models.encoder, folder=folder, output_folder=out, **{**FOLDER, **options})

    result = folder_run("album", "sgim/album")
    report, videos = result["result"]
    assert report.splitlines()[0] == "3 tracks: 2 rendered, 0 skipped (video already there), 1 failed"
    assert "failed   b_broken.wav" in report and result["ui"]["text"] == [report]
    assert videos.splitlines() == ["sgim/album/a_first.mp4", "sgim/album/c_third.mp4"]
    assert video_frame_count(base / "output" / "sgim/album/a_first.mp4")[0] == 48
    assert video_frame_count(base / "output" / "sgim/album/c_third.mp4")[0] == 72
    again, videos_again = folder_run("album", "sgim/album")["result"]
    assert again.splitlines()[0].startswith("3 tracks: 0 rendered, 2 skipped") and videos_again == videos
    # a list of files; a given source image
    source, = run("SGIMSourceLatent", nodes, generator=models.generator, seed=9, truncation_psi=0.7, mode="random",
                  batch_size=1)
    listed, listed_videos = folder_run("album/c_third.wav\n\nalbum/a_first.wav", "sgim/listed", source=source)["result"]
    assert listed.splitlines()[0].startswith("2 tracks: 2 rendered") and "b_broken" not in listed
    assert listed_videos.splitlines() == ["sgim/listed/c_third.mp4", "sgim/listed/a_first.mp4"]
    # refused before any work, naming the input
    for folder, match in [("../outside", "leaves the input folder"), ("/etc", "relative to input/"),
                          ("album/missing.wav\nalbum/a_first.wav", "neither a folder nor a file"),
                          ("album/notes.txt\nalbum/a_first.wav", "not an audio file"), ("", "give a folder")]:
        with pytest.raises(errors.ParameterError, match=f"Music Videos from a Folder, input 'folder'.*{match}"):
            folder_run(folder, "sgim/x")
    with pytest.raises(errors.ParameterError, match="Music Videos from a Folder, input 'output_folder'"):
        folder_run("album", "../elsewhere")
    with pytest.raises(errors.ParameterError, match="Music Videos from a Folder, input 'keyframes'"):
        folder_run("album", "sgim/x", keyframes="beats:lots")
    music_render = sys.modules[nodes.__name__.rsplit(".", 1)[0] + ".sgim_nodes.jobs.music_render"]
    monkeypatch.setattr(music_render, "MAX_FOLDER_ENTRIES", 3)
    with pytest.raises(errors.ParameterError, match="input 'folder'.*more than 3 entries"):
        folder_run("album", "sgim/x")
    assert not (base / "output" / "sgim" / "x").exists()


TEN_MINUTES_NODE = r"""
import importlib.util, sys, types
from pathlib import Path
import numpy as np, psutil, torch
repo, base, generator_name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
sys.path[:0] = [repo, repo + "/tests", repo + "/tests/integration"]
torch.set_num_threads(1)
from test_nodes import PACK_MODULE, fake_folder_paths
sys.modules["folder_paths"] = fake_folder_paths(base)
process, rss = psutil.Process(), []
class ProgressBar:  # ComfyUI's, recording the memory at a tenth of the frames and at the end
    def __init__(self, total, node_id=None):
        self.total = total
    def update_absolute(self, value, total=None, preview=None):
        if value in (self.total // 10, self.total):
            rss.append(process.memory_info().rss)
comfy = types.ModuleType("comfy"); comfy.utils = types.ModuleType("comfy.utils"); comfy.utils.ProgressBar = ProgressBar
sys.modules.update({"comfy": comfy, "comfy.utils": comfy.utils})
spec = importlib.util.spec_from_file_location(PACK_MODULE, repo + "/__init__.py", submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec); sys.modules[PACK_MODULE] = pack; spec.loader.exec_module(pack)
nodes = sys.modules[PACK_MODULE + ".nodes"]
def node(name, **inputs):
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(**inputs)
rng = np.random.default_rng(0)
wave = torch.from_numpy(rng.standard_normal(600 * 8000).astype(np.float32) * 0.05)
wave[::4000] = 0.9  # a click every half second
audio = {"waveform": wave[None, None], "sample_rate": 8000}
generator, = node("SGIMLoadStyleGAN", generator_name=generator_name)
features, *_ = node("SGIMAudioFeatures", audio=audio, fps=8.0, start_seconds=0.0, end_seconds=0.0, smoothing_seconds=0.1)
source, = node("SGIMSourceLatent", generator=generator, seed=1, truncation_psi=0.7, mode="random", batch_size=1)
from test_animate import synthetic_keyframes
from sgim_nodes.animate import keyframe_times
times = keyframe_times(features.features.timeline, 60.0)
kf = synthetic_keyframes(times, num_ws=generator.num_ws, w_dim=generator.w_dim)
music_video = sys.modules[PACK_MODULE + ".comfy_nodes.music_video"]
keyframes = music_video.MusicKeyframes(kf, features)
wplus, count = node("SGIMMusicTrajectory", keyframes=keyframes, reactivity=0.5, band_layers=True,
                    rotation_degrees=4.0, translation=0.05, frame_offset=0, frame_count=0)
out = node("SGIMRenderMusicVideo", generator=generator, wplus=wplus, batch_size=8, crf=18, size=0,
           filename_prefix="ten/minutes")
from sgim_nodes.animate.render import video_frame_count
frames, video_s, audio_s = video_frame_count(base / "output" / out["result"][1])
print(count, frames, round(video_s, 3), round(audio_s, 3), *rss)
"""


def test_a_ten_minute_track_renders_through_the_node_with_flat_memory(comfy_base, tmp_path):
    import shutil

    base, names = comfy_base
    root = tmp_path / "comfy"
    shutil.copytree(base / "models", root / "models")
    (root / "output").mkdir()
    (root / "input").mkdir()
    out = subprocess.run([sys.executable, "-c", TEN_MINUTES_NODE, str(REPO), str(root), names["generator"]],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    count, frames, video_s, audio_s, rss_early, rss_end = (float(v) for v in out.stdout.split()[-6:])
    assert count == frames == 4800 and abs(video_s - 600) < 1e-3 and abs(audio_s - 600) < 0.05
    # all frames at once would be 4800 x 32 x 32 x 3 floats = 59 MB; the render grows by far less
    assert rss_end - rss_early < 15e6, (rss_early, rss_end)
