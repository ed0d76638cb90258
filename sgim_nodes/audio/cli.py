"""``embed-audio FILE --encoder NAME``: embed a sound into CLIP space and summarise it.

Prints the audio's duration, rate, channels, the number of model windows and the embedding's size and
norm; with ``--clip`` and ``--text`` also the cosine similarity to each prompt (best first). ``--out`` saves
the embedding as a comfyui-sgim ``embedding`` safetensors file ([1, D] pooled or [1, W, D] per window).
``--encoder`` and ``--clip`` take a path or a file name in the models folder, as ``edit`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

KIND = "embedding"


def _parser() -> argparse.ArgumentParser:
    from ..cli_help import command_parser
    from ..options import flag

    parser = command_parser("embed-audio", __doc__)
    parser.add_argument("file", help="audio file (wav, flac, mp3, ogg, ...)")
    parser.add_argument("--encoder", required=True, help="audio encoder (official .pth or our .safetensors): a path "
                                                         "or a file name in models/sgim_audio_encoders")
    parser.add_argument("--out", help="save the embedding to this .safetensors file")
    parser.add_argument("--hop", **flag("hop_seconds", default=None, help="seconds between window starts (default: "
                                                                           "the window length)"))
    parser.add_argument("--per-window", action="store_true", help="keep one embedding per window instead of the mean")
    parser.add_argument("--start", **flag("start", default=None, help="start of the part to embed, seconds"))
    parser.add_argument("--end", **flag("end", default=None, help="end of the part to embed, seconds"))
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--clip", help="CLIP model (a path or a file name in models/sgim_clip), to compare the sound "
                                       "with --text prompts")
    parser.add_argument("--clip-model", default=None, help="open_clip model name of --clip when it cannot be inferred")
    parser.add_argument("--text", nargs="+", default=[], help="prompts to rank by cosine similarity (needs --clip)")
    return parser


def _model_path(option: str, folder: str, given: str) -> Path:
    """A path, or a file name in ``models_dir()/folder``; the error says where it looked."""
    from ..errors import ParameterError
    from ..models import find_model_file, models_dir

    found = find_model_file(folder, given)
    if found is None:
        raise ParameterError(f"--{option}: {given!r} not found, neither as a path nor as "
                             f"{models_dir() / folder / Path(given).name} (models folder: env SGIM_MODELS_DIR)",
                             parameter=option)
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..errors import ParameterError
    from ..fileio import save_model_file
    from .decode import load_audio
    from .encoder import embed_audio, load_audio_encoder, windows_for
    from .signal import measure_signal

    from ..device import resolve_device
    from ..fileio import check_output_file

    if args.text and not args.clip:
        raise ParameterError("--text needs --clip (the CLIP model file that embeds the prompts)")
    resolve_device(args.device)
    if args.out:  # before the work, so a long embedding is never lost to an unwritable path
        check_output_file(args.out, "--out")
    encoder_path = _model_path("encoder", "sgim_audio_encoders", args.encoder)
    clip_path = _model_path("clip", "sgim_clip", args.clip) if args.clip else None
    waveform, rate = load_audio(args.file)
    print(f"[sgim] loading audio encoder {encoder_path}", file=sys.stderr, flush=True)
    encoder = load_audio_encoder(encoder_path, device=args.device)
    pool = "none" if args.per_window else "mean"
    embedding = embed_audio(encoder, waveform, rate, hop_seconds=args.hop, pool=pool,
                            start_seconds=args.start, end_seconds=args.end)[0]
    start = int(round((args.start or 0) * rate))
    stop = waveform.shape[-1] if args.end is None else min(waveform.shape[-1], int(round(args.end * rate)))
    windows = windows_for(encoder, stop - start, rate, args.hop)
    level = measure_signal(waveform, rate, args.start, args.end)
    warning = level.warning()
    if warning:
        print(warning, file=sys.stderr)
    print(f"file:       {args.file}")
    print(f"audio:      {waveform.shape[-1] / rate:.3f} s, {rate} Hz, {waveform.shape[0]} channel(s)")
    print(f"encoder:    {encoder.config['backbone']}, {encoder.embed_dim}-d, aligned to "
          f"{encoder.config.get('clip_model') or 'unknown CLIP'}")
    print(f"level:      RMS {level.rms_dbfs:.1f} dBFS, peak {level.peak_dbfs:.1f} dBFS")
    print(f"windows:    {windows} x {encoder.settings.window_seconds:.2f} s"
          f"{'' if args.hop is None else f', hop {args.hop} s'}")
    print(f"embedding:  shape {list(embedding.shape)}, L2 norm {float(embedding.norm(dim=-1).mean()):.4f}")
    if args.clip:
        from ..clip import load_clip, text_similarities
        from .encoder import check_compatible

        print(f"[sgim] loading CLIP {clip_path}", file=sys.stderr, flush=True)
        clip = load_clip(clip_path, args.clip_model, device=args.device)
        check_compatible(encoder, clip)
        if args.text:
            pooled = embedding if embedding.dim() == 1 else embedding.mean(dim=0)
            print(f"similarity to prompts ({clip.name}):")
            for prompt, cosine in text_similarities(clip, pooled, args.text):
                print(f"  {cosine:+.4f}  {prompt}")
    if args.out:
        config = {"source": Path(args.file).name, "pool": pool, "hop_seconds": args.hop, "windows": windows,
                  "start_seconds": args.start, "end_seconds": args.end, "encoder": encoder.config}
        save_model_file(args.out, {"embedding": embedding[None].cpu()}, KIND, config)
        print(f"saved:      {args.out}")
    return 0
