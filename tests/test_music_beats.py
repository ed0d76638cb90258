"""Tempo and beats (sgim_nodes.animate.beats): synthetic click tracks at known tempi, one with tempo
drift, keyframes on beats and bars, beat pulses in the trajectory and the features plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sgim_nodes.animate import Trajectory, features_of_waveform, make_timeline, plot_features
from sgim_nodes.animate.beats import (beat_pulses, keyframe_times_for, parse_keyframe_spec, track_beats,
                                      with_beats)
from sgim_nodes.errors import ParameterError
from test_animate import click_track, synthetic_keyframes

RATE = 22050


def clicks_at(bpm: float, seconds: float, drift_to: float | None = None, first: float = 0.3) -> list[float]:
    """Click times of a metronome at ``bpm`` (drifting linearly to ``drift_to`` over the track)."""
    t, out = first, []
    while t < seconds - 0.2:
        out.append(t)
        t += 60.0 / (bpm if drift_to is None else bpm + (drift_to - bpm) * t / seconds)
    return out


def features_of_clicks(clicks, seconds=30.0, fps=24.0, accent_every=0):
    wave = click_track(seconds, clicks=clicks, rate=RATE, channels=1)
    if accent_every:  # a louder, bassier click on each downbeat
        t = torch.arange(2000) / RATE
        for c in clicks[::accent_every]:
            i = int(round(c * RATE))
            wave[0, i:i + 2000] += 0.6 * torch.sin(2 * np.pi * 70 * t)
    return features_of_waveform(wave.clamp(-1, 1), RATE, make_timeline(seconds, fps))


def assert_on_the_clicks(beats, clicks, fps):
    frames, truth = np.array(beats.frames), np.round(np.array(clicks) * fps)
    assert len(frames) == len(truth), (len(frames), len(truth))
    assert np.abs(frames - truth).max() <= 1  # every beat within one frame of its click, none missing or extra


@pytest.mark.parametrize("bpm, fps", [(97, 24.0), (128, 24.0), (174, 24.0), (128, 29.97), (174, 12.0)])
def test_click_tracks_give_the_tempo_within_two_percent_and_beats_within_a_frame(bpm, fps):
    clicks = clicks_at(bpm, 30.0)
    beats = track_beats(features_of_clicks(clicks, fps=fps))
    assert abs(beats.tempo - bpm) / bpm < 0.02, beats.tempo
    assert abs(beats.tempo - bpm) / bpm < 0.005  # from the beats' span, better than the 2 % asked
    assert_on_the_clicks(beats, clicks, fps)


def test_a_drifting_tempo_is_followed_beat_by_beat():
    clicks = clicks_at(120, 30.0, drift_to=132)  # 10 % faster by the end
    beats = track_beats(features_of_clicks(clicks))
    mean_bpm = 60 * (len(clicks) - 1) / (clicks[-1] - clicks[0])
    assert abs(beats.tempo - mean_bpm) / mean_bpm < 0.02
    assert_on_the_clicks(beats, clicks, 24.0)


def test_tempo_corrections_and_a_manual_bpm():
    clicks = clicks_at(128, 20.0)
    features = features_of_clicks(clicks, seconds=20.0)
    half = track_beats(features, tempo_correction="half")
    assert abs(half.tempo - 64) < 1.3 and np.abs(np.array(half.frames)[:, None]
                                                 - np.round(np.array(clicks) * 24)[None]).min(axis=1).max() <= 1
    double = track_beats(features, tempo_correction="double")
    assert abs(double.tempo - 256) < 5 and len(double.frames) >= 2 * len(clicks) - 3
    manual = track_beats(features, bpm=128)
    assert manual.tempo == 128 and manual.estimated_bpm is None
    assert_on_the_clicks(manual, clicks, 24.0)
    with pytest.raises(ParameterError, match="tempo_correction"):
        track_beats(features, tempo_correction="triple")
    with pytest.raises(ParameterError, match="bpm"):
        track_beats(features, bpm=-5)


def test_keyframes_land_on_beats_and_bars():
    clicks = clicks_at(128, 30.0, first=0.5)
    features = features_of_clicks(clicks, accent_every=4)  # downbeats on clicks 0, 4, 8, ...
    timeline = features.timeline
    click_frames = np.round(np.array(clicks) * 24)
    times, beats = keyframe_times_for("beats:4", timeline, features)
    inner = np.array(times[1:-1]) * 24
    assert times[0] == 0 and times[-1] == (timeline.frames - 1) / 24
    assert all(np.abs(click_frames - f).min() <= 1 for f in inner)  # every inner keyframe on a click
    assert np.allclose(np.diff(inner), 4 * 60 / 128 * 24, atol=1.01)  # four beats apart
    bar_times, _ = keyframe_times_for("bars:1", timeline, features)
    downbeats = click_frames[::4]
    assert all(np.abs(downbeats - f).min() <= 1 for f in np.array(bar_times[1:-1]) * 24)  # on the accents
    two_bars, _ = keyframe_times_for("bars:2", timeline, features)
    assert len(two_bars) < len(bar_times) and set(two_bars[1:-1]) <= set(bar_times)
    seconds, none = keyframe_times_for("seconds:2.5", timeline, features)
    assert none is None and seconds[:3] == [0.0, 2.5, 5.0]
    assert parse_keyframe_spec("4") == ("seconds", 4.0)
    for bad in ("beats:0", "beats:1.5", "minutes:2", "bars:x"):
        with pytest.raises(ParameterError, match="keyframes"):
            parse_keyframe_spec(bad)


def test_beat_pulses_drive_the_trajectory_and_show_in_the_plot():
    clicks = clicks_at(120, 10.0)
    features = features_of_clicks(clicks, seconds=10.0)
    beats = track_beats(features)
    with pytest.raises(ParameterError, match="beat_weight"):
        Trajectory(synthetic_keyframes([0.0, 9.0]), features, beat_weight=0.5)
    features = with_beats(features, beats)
    pulses = beat_pulses(features.beat_times, features.timeline)
    assert np.allclose(pulses[beats.frames], 1.0) and pulses[beats.frames[0] - 1] == 0.0
    assert pulses[beats.frames[0] + 2] < 0.5  # decays within the beat
    keyframes = synthetic_keyframes([0.0, (features.timeline.frames - 1) / 24], offset=0.5)
    trajectory = Trajectory(keyframes, features, reactivity=1.0, band_layers=False, beat_weight=1.0)
    displacement = (trajectory.codes() - trajectory.path()).flatten(1).norm(dim=1).numpy()
    base = (trajectory.path() - keyframes.source).flatten(1).norm(dim=1).numpy()
    assert np.allclose(displacement, base * pulses, rtol=1e-4, atol=1e-4)  # the drive is the pulse
    assert json.loads(features.to_json())["tempo"] == pytest.approx(beats.tempo, abs=1e-3)
    plain = plot_features(features.__class__(features.timeline, features.values))
    with_ticks = plot_features(features)
    columns = np.nonzero((with_ticks[:10] != plain[:10]).any(axis=(0, 2)))[0]
    assert len(columns) >= len(beats.frames)  # a tick per beat along the top (and the tempo label)


def test_beat_tracking_is_cheap_for_an_hour_of_frames():
    import time

    rng = np.random.default_rng(0)
    onset = rng.random(24 * 3600) * 0.2
    onset[::12] = 1.0  # 120 BPM at 24 fps
    from sgim_nodes.animate.features import AudioFeatures

    features = AudioFeatures(make_timeline(3600.0, 24.0), {"onset": onset.tolist(), "low": onset.tolist()})
    started = time.process_time()
    beats = track_beats(features)
    assert abs(beats.tempo - 120) < 0.1 and len(beats.frames) == 7200
    assert time.process_time() - started < 30  # CPU seconds; a second or two on an idle core
