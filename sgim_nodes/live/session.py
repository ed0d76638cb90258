"""A live session: audio in, frames out at a target rate, the picture following what it hears.

Per video frame ``i`` (``i / fps`` seconds into the stream) the code is

    base  = source + alpha * rows * offset(t)                         meaning (blended direction)
    code  = base + reactivity * drive * rows * (base - w_avg)          reaction (animate's band drive)

- ``offset(t)``: every ``embed_every`` seconds of stream the audio encoder embeds the last window
  (at most the encoder's ~10 s), optionally mixed with a prompt, and a :class:`Meaning` turns the
  target into a W+ direction (:class:`sgim_nodes.live.meaning.InstantMeaning`: the instant edit's
  direction at strength 1, so ``alpha`` is the instant edit's strength); the new direction replaces
  the previous one over ``blend_seconds`` (smoothstep), so nothing jumps. Without a meaning provider
  (``NoMeaning``) the offset is zero and the picture follows the sound's loudness and bands only; the
  embedding still names the nearest prompts.
- Updates run on a worker thread of their own, off the frame thread: the update made from the window
  ending at stream time ``t`` is applied (its blend starts) at exactly ``t + update_delay``, whatever
  the wall clock did. A frame at or after that time waits for the update only if it is not finished
  yet (work slower than the delay), so the frames never depend on how fast the worker was.
- ``drive``: animate's :func:`~sgim_nodes.animate.trajectory.layer_drive` (envelope, bass -> coarse
  rows, mids -> middle rows, highs -> fine rows) on the causal features of :mod:`.features`. In
  animate the reaction scales the edit's displacement from its source; live there may be no edit,
  so it scales the distance from the generator's average code instead (loud = further from the
  average picture: more contrast and detail), which includes the edit when there is one.
- ``rows``: the layer preset (all, coarse, middle, fine) the edits are allowed to touch.
- StyleGAN3: the slow loudness / brightness / bass curves rotate and shift the input, as animate does.

Determinism: a frame depends only on the stream up to its own time and the knobs (the direction updates
are made and applied at fixed stream times and the blend is a function of stream time), so the same audio gives the same
frames however it is chunked and whichever frames a slow renderer had to drop.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from ..errors import AudioError, ParameterError
from ..limits import MAX_AUDIO_ABS, check_float, check_int
from . import defaults
from .features import CausalFeatures

LAYER_PRESETS = ("all", "coarse", "middle", "fine")
SIZES = (64, 128, 256, 512, 768, 1024)
MAX_PROMPT_CHARS = 300
# What the page lists as "nearest prompts" (with the user's prompt): everyday sounds and scenes.
VOCABULARY = ("rain", "thunderstorm", "wind", "ocean waves", "a crackling fire", "birds singing", "a dog barking",
              "people talking", "a crowd cheering", "laughter", "a baby crying", "footsteps", "a car engine",
              "a siren", "a train", "an airplane", "church bells", "a piano", "a guitar", "drums", "a violin",
              "electronic dance music", "a choir singing", "silence", "clapping", "a clock ticking",
              "water running", "glass breaking", "a storm at sea", "a quiet forest")


@dataclass(frozen=True)
class LiveSettings:
    """The knobs of a session; any of them may change while it runs (:meth:`LiveSession.update`)."""

    reactivity: float = defaults.DEFAULT_REACTIVITY
    alpha: float = defaults.DEFAULT_ALPHA
    beta: float = defaults.DEFAULT_BETA
    prompt: str = ""
    prompt_weight: float = defaults.DEFAULT_PROMPT_WEIGHT
    layers: str = "all"
    band_layers: bool = True
    size: int = defaults.DEFAULT_SIZE
    rotation_degrees: float = 4.0
    translation: float = 0.05

    def checked(self) -> "LiveSettings":
        check_float("reactivity", self.reactivity, 0.0, 10.0, what="a reactivity")
        check_float("alpha", self.alpha, 0.0, 10.0, what="a strength")
        check_float("beta", self.beta, 0.0, 0.95, what="a relevance threshold")
        check_float("prompt_weight", self.prompt_weight, 0.0, 1.0, what="a weight")
        check_float("rotation_degrees", self.rotation_degrees, 0.0, 180.0, what="an angle in degrees")
        check_float("translation", self.translation, 0.0, 1.0, what="a shift")
        if not isinstance(self.prompt, str) or len(self.prompt) > MAX_PROMPT_CHARS:
            raise ParameterError(f"prompt: expected text of at most {MAX_PROMPT_CHARS} characters", parameter="prompt")
        if self.layers not in LAYER_PRESETS:
            raise ParameterError(f"layers: expected one of {', '.join(LAYER_PRESETS)}, got {self.layers!r}",
                                 parameter="layers")
        if not isinstance(self.band_layers, bool):
            raise ParameterError(f"band_layers: expected true or false, got {self.band_layers!r}",
                                 parameter="band_layers")
        if self.size not in SIZES or isinstance(self.size, bool):
            raise ParameterError(f"size: expected one of {', '.join(map(str, SIZES))} pixels, got {self.size!r}",
                                 parameter="size")
        return replace(self, reactivity=float(self.reactivity), alpha=float(self.alpha), beta=float(self.beta),
                       prompt_weight=float(self.prompt_weight), rotation_degrees=float(self.rotation_degrees),
                       translation=float(self.translation), size=int(self.size))

    def updated(self, changes: dict) -> "LiveSettings":
        """A checked copy with ``changes`` (names as the fields; an unknown name is refused)."""
        if not isinstance(changes, dict):
            raise ParameterError("settings: expected an object of knob values", parameter="settings")
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ParameterError(f"settings: unknown knob {unknown[0]!r} (known: {', '.join(sorted(known))})",
                                 parameter=unknown[0])
        return replace(self, **changes).checked()

    def to_dict(self) -> dict:
        return asdict(self)


class Meaning(Protocol):
    """Turns a CLIP-space target into a W+ direction (at strength 1) from the session's source code.

    Optional: ``prepare(generator, clip, source)`` (called once when the session starts, e.g. the
    source's own CLIP embedding) and ``status()`` (what the page shows, e.g. "instant: analysing 40%").
    ``direction`` runs on the session's update thread and may return None: no direction yet (keep the
    current one)."""

    name: str

    def direction(self, target: torch.Tensor, source: torch.Tensor, settings: "LiveSettings") -> torch.Tensor | None:
        """``target`` [D] (unit norm), ``source`` [1, num_ws, w_dim] -> offset [num_ws, w_dim]."""


class NoMeaning:
    """Reactivity alone: no direction (the embedding is still made, for the nearest prompts)."""

    name = "none"

    def direction(self, target, source, settings=None):
        return torch.zeros_like(source[0])


@dataclass
class LiveFrame:
    index: int
    time: float  # seconds of stream the frame shows
    image: np.ndarray  # uint8 [H, W, 3]
    stats: dict


class Recorder:
    """The session as an .mp4 with the audio received, frame-exact: one video frame per frame slot.

    Slots a slow renderer dropped repeat the last rendered picture, so the video has one frame per
    ``1 / fps`` of stream and the audio exactly those frames' length (animate's rule and muxer). A
    slot is written only once the audio up to its end has arrived, so the muxer never runs short of
    received audio in the middle of a recording (only the last frame's may be padded at the end).
    """

    def __init__(self, path: Path, fps: float, sample_rate: int, first_frame: int, width: int, height: int,
                 skip_samples: int = 0):
        from ..animate.render import VideoWriter
        from ..animate.timeline import Timeline

        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.fps, self.sample_rate, self.first_frame = fps, sample_rate, first_frame
        self.timeline = Timeline(fps=fps, start=0.0, frames=1)
        self.audio: deque[torch.Tensor] = deque()
        self.received = 0  # samples of the recording received
        self.skip = int(skip_samples)  # samples still to come before the first frame's time
        self.slots: deque[tuple[int, np.ndarray]] = deque()  # pictures waiting for their audio
        self.next_slot = first_frame
        self.last_image: np.ndarray | None = None
        self.width, self.height = width, height
        self.writer = VideoWriter(self.part, self.timeline, width, height, audio=self, sample_rate=sample_rate,
                                  channels=1, open_ended=True)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:  # the writer pulls received audio from here
        if not self.audio:
            raise StopIteration
        return self.audio.popleft()

    def add_audio(self, mono: np.ndarray) -> None:
        if self.skip:
            drop = min(self.skip, mono.size)
            mono, self.skip = mono[drop:], self.skip - drop
        if mono.size:
            self.audio.append(torch.from_numpy(np.array(mono, dtype=np.float32))[None])
            self.received += mono.size
            self._flush()

    def add_frame(self, index: int, image: np.ndarray) -> None:
        if image.shape[0] != self.height or image.shape[1] != self.width:  # the size knob moved: keep the file's
            from ..animate.render import resize

            tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
            scaled = resize(tensor, max(self.width, self.height)).round().clamp(0, 255).to(torch.uint8)[0]
            image = scaled.permute(1, 2, 0).contiguous().numpy()[: self.height, : self.width]
        for slot in range(self.next_slot, index):  # dropped slots show the last picture (the first: this one)
            self.slots.append((slot, self.last_image if self.last_image is not None else image))
        if index >= self.next_slot:
            self.slots.append((index, image))
            self.next_slot = index + 1
        self.last_image = image
        self._flush()

    def _flush(self) -> None:
        while self.slots:
            slot = self.slots[0][0] - self.first_frame
            if self.received < self.timeline.audio_samples(self.sample_rate, slot + 1):
                break
            self.writer.write(self.slots.popleft()[1][None])

    @property
    def frames(self) -> int:
        return self.writer.frames_written

    def close(self) -> Path:
        try:
            while self.slots:  # the last slots: their audio ends early only by what had not arrived yet
                self.writer.write(self.slots.popleft()[1][None])
        finally:
            self.writer.close()
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001  (the partial file is removed anyway)
            pass
        self.part.unlink(missing_ok=True)


class LiveSession:
    """One stream of audio -> frames. ``feed`` audio as it arrives; ``render_latest`` (bounded latency)
    or ``render(i)`` (every frame, offline). Not thread-safe: one thread feeds and renders (the meaning
    updates run on the session's own update thread, inside ``scope()``, e.g. a host's device scope).
    ``close()`` when done (it stops that thread)."""

    def __init__(self, generator, *, sample_rate: int, fps: float = defaults.DEFAULT_FPS,
                 settings: LiveSettings | None = None, encoder=None, clip=None, meaning: Meaning | None = None,
                 seed: int = 0, truncation: float = 0.7, embed_every: float = defaults.DEFAULT_EMBED_EVERY,
                 window_seconds: float | None = None, blend_seconds: float = defaults.DEFAULT_BLEND_SECONDS,
                 release: float = defaults.DEFAULT_RELEASE, vocabulary: Sequence[str] = VOCABULARY,
                 update_delay: float = defaults.DEFAULT_UPDATE_DELAY,
                 scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        from ..audio.features import check_sample_rate
        from ..optimize import sample_source_ws

        self.sample_rate = check_sample_rate(sample_rate)
        if self.sample_rate < 8000:
            raise AudioError(f"sample_rate: expected at least 8000 Hz for live audio, got {sample_rate!r}",
                             parameter="sample_rate")
        self.fps = check_float("fps", fps, 0.0, 120.0, exclusive_minimum=True, what="a frame rate")
        self.settings = (settings or LiveSettings()).checked()
        self.embed_every = check_float("embed_every", embed_every, 0.05, 60.0, what="seconds")
        self.blend_seconds = check_float("blend_seconds", blend_seconds, 0.0, 60.0, what="seconds")
        self.release = check_float("release", release, 0.0, 10.0, what="seconds")
        self.update_delay = check_float("update_delay", update_delay, 0.0, 60.0, what="seconds")
        self.generator, self.encoder, self.clip = generator, encoder, clip
        self.meaning = meaning or NoMeaning()
        self.source = sample_source_ws(generator, 1, seed, truncation).detach()  # [1, num_ws, w_dim]
        self.w_avg = generator.w_avg.detach().to(self.source)
        self.num_ws = int(self.source.shape[1])
        self.motion = getattr(generator, "family", "stylegan2") == "stylegan3"
        encoder_window = encoder.settings.window_seconds if encoder is not None else 10.0
        self.window_seconds = min(encoder_window, check_float("window_seconds", window_seconds or encoder_window,
                                                              0.5, 60.0, what="seconds"))
        self.features = CausalFeatures(self.sample_rate, self.fps, self.release)
        ring = int(math.ceil(self.window_seconds * self.sample_rate))
        self.ring = np.zeros(ring, np.float32)  # the last window of audio, oldest first
        self.samples = 0  # samples received
        self.frame_values: deque[tuple[int, dict, float | None]] = deque(maxlen=max(8, int(self.fps * 10)))
        # (apply at, window end, the update's result to come); bounded by the audio a host lets queue
        self.pending_updates: deque[tuple[float, float, Future]] = deque()
        self.next_update = self.embed_every
        self.blend_from = torch.zeros_like(self.source[0])
        self.blend_to = torch.zeros_like(self.source[0])
        self.blend_start = 0.0
        self.last_rendered = -1
        self.dropped = 0
        self.nearest: list[tuple[str, float]] = []
        self.update_seconds: deque[float] = deque(maxlen=32)  # embedding + direction, per update (update thread)
        self.update_waits: deque[float] = deque(maxlen=32)  # how long a frame waited for an unfinished update
        self.update_threads: set[str] = set()  # the threads updates ran on (off the frame thread: tested)
        self.render_seconds: deque[float] = deque(maxlen=32)
        self.recorder: Recorder | None = None
        self.vocabulary = list(vocabulary)
        self._vocabulary_embeddings = None
        self._prompt_embedding: tuple[str, torch.Tensor] | None = None
        self.scope = scope
        if hasattr(self.meaning, "prepare"):
            self.meaning.prepare(generator, clip, self.source)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgim-live-update")
        if clip is not None and encoder is not None:  # the vocabulary's text, before the first update needs it
            self._worker.submit(self._vocabulary_text)

    # audio -------------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray, stamp: float | None = None) -> int:
        """Mono float32 samples at ``sample_rate``; ``stamp`` (the sender's clock) is handed on with the
        frames this audio completes, for end-to-end latency. Returns the newest complete frame (-1: none)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size and not np.isfinite(samples).all():
            raise AudioError("audio: the stream contains NaN or infinite samples", parameter="audio")
        if samples.size and float(np.abs(samples).max()) > MAX_AUDIO_ABS:
            raise AudioError(f"audio: samples beyond +-{MAX_AUDIO_ABS:g}; expected audio within about +-1",
                             parameter="audio")
        start = 0
        while start < samples.size:  # split at the update times, so each window ends exactly on one
            until = int(round(self.next_update * self.sample_rate)) - self.samples
            piece = samples[start:start + max(1, until)] if until > 0 else samples[start:start]
            if piece.size:
                self._take(piece, stamp)
                start += piece.size
            if self.samples >= int(round(self.next_update * self.sample_rate)):
                # the knobs as they are now (the prompt, its weight, beta) go with the window
                future = self._worker.submit(self._make_update, self.ring.copy(), self.settings)
                self.pending_updates.append((self.next_update + self.update_delay, self.next_update, future))
                self.next_update += self.embed_every
        return self.newest_frame

    def _take(self, piece: np.ndarray, stamp: float | None) -> None:
        n = piece.size
        if n >= self.ring.size:
            self.ring[:] = piece[-self.ring.size:]
        else:
            self.ring[:-n] = self.ring[n:]
            self.ring[-n:] = piece
        self.samples += n
        if self.recorder is not None:
            self.recorder.add_audio(piece)
        for index, values in self.features.feed(piece):
            self.frame_values.append((index, values, stamp))

    @property
    def newest_frame(self) -> int:
        return self.frame_values[-1][0] if self.frame_values else -1

    @property
    def stream_seconds(self) -> float:
        return self.samples / self.sample_rate

    # knobs -------------------------------------------------------------------------------------
    def update(self, changes: dict) -> LiveSettings:
        self.settings = self.settings.updated(changes)
        return self.settings

    # meaning -----------------------------------------------------------------------------------
    def _apply_updates(self, until: float) -> None:
        """On the frame thread: the updates due by stream time ``until``, in order (waiting for one only
        if its work is not finished yet)."""
        while self.pending_updates and self.pending_updates[0][0] <= until + 1e-9:
            at, _, future = self.pending_updates[0]
            clock = time.perf_counter()
            direction, nearest = future.result()
            self.update_waits.append(time.perf_counter() - clock)
            self.pending_updates.popleft()
            if direction is not None:
                self.blend_from = self._offset(at)
                self.blend_to = direction
                self.blend_start = at
            if nearest is not None:
                self.nearest = nearest

    def _make_update(self, window: np.ndarray, settings: LiveSettings):
        """On the update thread: (direction or None, nearest prompts or None) of one window."""
        clock = time.perf_counter()
        self.update_threads.add(threading.current_thread().name)
        with self.scope(), torch.no_grad():
            target, embedding = self._target(window, settings)
            direction = nearest = None
            if target is not None:
                direction = self.meaning.direction(target, self.source, settings)
                if direction is not None:
                    direction = direction.detach().to(self.source)
                    if direction.shape != self.source.shape[1:] or not bool(torch.isfinite(direction).all()):
                        raise ParameterError(f"meaning {self.meaning.name!r}: expected a finite direction of "
                                             f"shape {list(self.source.shape[1:])}, got {list(direction.shape)}")
                nearest = self._nearest(embedding, settings)
        self.update_seconds.append(time.perf_counter() - clock)
        return direction, nearest

    def _target(self, window: np.ndarray, settings: LiveSettings):
        if self.encoder is None:
            return None, None
        from ..audio import embed_audio

        audio = torch.from_numpy(window)[None]
        embedding = embed_audio(self.encoder, audio, self.sample_rate, pool="first")[0].float()
        target = embedding
        prompt = settings.prompt.strip()
        if prompt and self.clip is not None and settings.prompt_weight > 0:
            text = self._text(prompt)
            w = settings.prompt_weight
            target = torch.nn.functional.normalize((1 - w) * embedding.to(text) + w * text, dim=0)
        return target, embedding

    def _text(self, prompt: str) -> torch.Tensor:
        if self._prompt_embedding is None or self._prompt_embedding[0] != prompt:
            self._prompt_embedding = (prompt, self.clip.encode_text([prompt])[0].float())
        return self._prompt_embedding[1]

    def _vocabulary_text(self) -> torch.Tensor:
        if self._vocabulary_embeddings is None:
            with self.scope(), torch.no_grad():
                self._vocabulary_embeddings = self.clip.encode_text(self.vocabulary).float()
        return self._vocabulary_embeddings

    def _nearest(self, embedding: torch.Tensor, settings: LiveSettings) -> list[tuple[str, float]] | None:
        if self.clip is None:
            return None
        names, text = list(self.vocabulary), self._vocabulary_text()
        prompt = settings.prompt.strip()
        if prompt and prompt not in names:
            names, text = names + [prompt], torch.cat([text, self._text(prompt)[None].to(text)])
        sims = (text @ torch.nn.functional.normalize(embedding.to(text), dim=0)).tolist()
        return sorted(zip(names, sims), key=lambda item: -item[1])[:5]

    @property
    def meaning_status(self) -> str:
        status = getattr(self.meaning, "status", None)
        return status() if callable(status) else self.meaning.name

    def _offset(self, t: float) -> torch.Tensor:
        if self.blend_seconds == 0:
            u = 1.0
        else:
            u = min(1.0, max(0.0, (t - self.blend_start) / self.blend_seconds))
        u = u * u * (3 - 2 * u)
        return self.blend_from + u * (self.blend_to - self.blend_from)

    # frames ------------------------------------------------------------------------------------
    def _rows(self) -> torch.Tensor:
        from ..optimize.layer_mask import preset_layers

        rows = torch.zeros(self.num_ws, 1, dtype=self.source.dtype, device=self.source.device)
        rows[preset_layers(self.settings.layers, self.num_ws, getattr(self.generator, "ws_resolutions", None))] = 1
        return rows

    def code(self, index: int) -> tuple[torch.Tensor, dict]:
        """The W+ code ``[1, num_ws, w_dim]`` of frame ``index`` (complete, not older than the kept ones)."""
        values, stamp = self._values(index)
        t = index / self.fps
        self._apply_updates(t)
        rows = self._rows()
        base = self.source + self.settings.alpha * rows * self._offset(t)
        drive = _layer_drive(values, self.num_ws, self.settings.band_layers).to(base)  # [num_ws]
        push = self.settings.reactivity * drive[:, None] * rows * (base[0] - self.w_avg)
        code = base + push[None]
        stats = {"index": index, "t": round(t, 4), "stamp": stamp, "drive": round(float(drive.mean()), 4),
                 "displacement": round(float(push.norm(dim=-1).mean()), 5),
                 "offset": round(float((base - self.source)[0].norm(dim=-1).mean()), 5),  # the meaning's shift
                 "features": {k: round(v, 4) for k, v in values.items()}}
        return code, stats

    def _values(self, index: int) -> tuple[dict, float | None]:
        if not self.frame_values or not self.frame_values[0][0] <= index <= self.frame_values[-1][0]:
            have = (f"{self.frame_values[0][0]}..{self.frame_values[-1][0]}" if self.frame_values else "none")
            raise ParameterError(f"frame {index}: not complete or no longer kept (frames {have})", parameter="index")
        first = self.frame_values[0][0]
        _, values, stamp = self.frame_values[index - first]
        return values, stamp

    def render(self, index: int) -> LiveFrame:
        """Frame ``index`` (every frame in order for an offline, frame-exact run)."""
        from ..animate.render import resize, to_uint8
        from ..animate.trajectory import transform_matrix

        clock = time.perf_counter()
        code, stats = self.code(index)
        size = self.settings.size
        device = next(iter(self.generator.parameters())).device  # where it is now (a host may move it)
        with torch.no_grad():
            if self.motion and (self.settings.rotation_degrees > 0 or self.settings.translation > 0):
                values = self._values(index)[0]
                matrix = transform_matrix(self.settings.rotation_degrees * (2 * values["slow_loudness"] - 1),
                                          self.settings.translation * (2 * values["slow_centroid"] - 1),
                                          self.settings.translation * (2 * values["slow_low"] - 1))
                self.generator.set_input_transform(matrix.to(device))
                try:
                    images = self.generator.synthesis(code.to(device), noise_mode="const")
                finally:
                    self.generator.set_input_transform(torch.eye(3, device=device))
            else:
                images = self.generator.synthesis(code.to(device), noise_mode="const")
            image = to_uint8(resize(images.float(), size))[0]
        if self.last_rendered >= 0 and index > self.last_rendered + 1:
            self.dropped += index - self.last_rendered - 1
        self.last_rendered = max(self.last_rendered, index)
        if self.recorder is not None and index >= self.recorder.first_frame:
            self.recorder.add_frame(index, image)
        self.render_seconds.append(time.perf_counter() - clock)
        stats.update(dropped=self.dropped, nearest=[[name, round(sim, 4)] for name, sim in self.nearest],
                     meaning=self.meaning_status,
                     update_ms=round(1000 * float(np.mean(self.update_seconds)), 2) if self.update_seconds else None,
                     update_wait_ms=round(1000 * max(self.update_waits), 2) if self.update_waits else None,
                     render_ms=round(1000 * float(np.mean(self.render_seconds)), 2),
                     recording=self.recorder is not None)
        return LiveFrame(index, index / self.fps, image, stats)

    def render_latest(self) -> LiveFrame | None:
        """The newest complete frame, skipping (dropping) any older one not rendered yet; None if none is new."""
        newest = self.newest_frame
        if newest <= self.last_rendered:
            return None
        return self.render(newest)

    # recording ---------------------------------------------------------------------------------
    def start_recording(self, path: str | os.PathLike) -> None:
        if self.recorder is not None:
            raise ParameterError("record: a recording is already running", parameter="record")
        side = self.settings.size
        height, width = _output_shape(self.generator, side)
        first = self.newest_frame + 1  # from the next frame on; its audio starts at its own time
        # the recording's audio starts at the first frame's time: some of it may have arrived already
        start_sample = int(round(first / self.fps * self.sample_rate))
        extra = self.samples - start_sample
        recorder = Recorder(Path(path), self.fps, self.sample_rate, first, width, height,
                            skip_samples=max(0, -extra))
        if extra > 0:  # (at most a frame and the resampler's delay: well inside the ring)
            recorder.add_audio(self.ring[-min(extra, self.ring.size):])
        self.recorder = recorder

    def stop_recording(self) -> dict | None:
        if self.recorder is None:
            return None
        recorder, self.recorder = self.recorder, None
        path = recorder.close()
        frames = recorder.frames
        return {"path": str(path), "frames": frames, "seconds": frames / self.fps,
                "first_frame": recorder.first_frame, "start_seconds": recorder.first_frame / self.fps}

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        if self.recorder is not None:
            self.recorder.abort()
            self.recorder = None


def _layer_drive(values: dict, num_ws: int, band_layers: bool) -> torch.Tensor:
    """animate's per-row drive for one frame's features: ``[num_ws]``."""
    from ..animate.features import FEATURE_NAMES, AudioFeatures
    from ..animate.timeline import Timeline
    from ..animate.trajectory import layer_drive

    features = AudioFeatures(timeline=Timeline(fps=1.0, start=0.0, frames=1),
                             values={name: [values[name]] for name in FEATURE_NAMES})
    return layer_drive(features, num_ws, band_layers)[0]


def _output_shape(generator, size: int) -> tuple[int, int]:
    """(height, width) of frames at ``size`` (square generators: size x size; even for the encoder)."""
    side = int(size)
    return side - side % 2, side - side % 2
