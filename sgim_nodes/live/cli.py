"""``python -m sgim_nodes live``: the picture follows a microphone or a playing track, in a web page.

Opens a server on 127.0.0.1 (another address only with --host, and then every request needs the
token it prints); the page at its root captures the microphone or plays a file, streams the audio
and shows the frames. Recordings (the page's Record button) go to --out-dir.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ParameterError
from . import defaults


def _parser():
    from ..cli_help import command_parser
    from ..models import launcher

    p = command_parser("live", __doc__, epilog=f"Model files: {launcher()} download --list")
    p.add_argument("--generator", help="StyleGAN file (.pt/.pkl/.safetensors) or a name in models/stylegan")
    p.add_argument("--encoder", help="audio encoder (.pth/.safetensors) or a name in models/sgim_audio_encoders")
    p.add_argument("--clip", help="CLIP model or a name in models/sgim_clip")
    p.add_argument("--clip-model", help="open_clip model name when it cannot be inferred from the file")
    p.add_argument("--reactive-only", action="store_true",
                   help="load no encoder or CLIP: the picture follows loudness and bands only")
    p.add_argument("--meaning", choices=("instant", "none"),
                   help="instant (default with an encoder and CLIP): the picture moves toward what the sound "
                        "means through instant-edit directions (the generator's analysis is read from its cache, "
                        "or made in the background on first use); none: loudness and bands only")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but 127.0.0.1/localhost/::1 requires the printed token")
    p.add_argument("--port", type=int, default=defaults.DEFAULT_PORT, help="TCP port (0: any free one)")
    p.add_argument("--fps", type=float, default=defaults.DEFAULT_FPS,
                   help="frames per second aimed at (late frames are dropped, never queued)")
    p.add_argument("--embed-every", type=float, default=defaults.DEFAULT_EMBED_EVERY,
                   help="seconds between two embeddings of the last window (the meaning's update)")
    p.add_argument("--out-dir", type=Path, default=Path("live_recordings"), help="where recordings are written")
    p.add_argument("--seed", type=int, default=0, help="seed of the source picture")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    return p


def request_from_args(args):
    from ..jobs.live import LiveRequest
    from ..models import KNOWN_MODELS, find_model_file, is_bare_name, models_dir
    from ..pipeline import DEFAULT_FILES, fetch_missing_models

    roles = ("generator",) if args.reactive_only else ("generator", "encoder", "clip")
    if args.reactive_only and (args.encoder or args.clip):
        raise ParameterError("--reactive-only: loads no encoder or CLIP; leave out --encoder/--clip",
                             parameter="reactive_only")
    paths, missing = {}, []
    for arg in roles:
        folder, default_name = DEFAULT_FILES[arg]
        given = getattr(args, arg)
        found = find_model_file(folder, given, KNOWN_MODELS[default_name].filename)
        if found is None:
            if given:
                where = "" if not is_bare_name(given) else f" (looked in {models_dir() / folder} too)"
                raise ParameterError(f"--{arg}: file not found: {given}{where}", parameter=arg)
            missing.append((arg, default_name))
        paths[arg] = found
    if missing:  # the known defaults are fetched on first use, as `edit` does (SGIM_OFFLINE forbids it)
        paths.update(fetch_missing_models(missing))
    return LiveRequest(generator=paths["generator"], encoder=paths.get("encoder"), clip=paths.get("clip"),
                       clip_model=args.clip_model, host=args.host, port=args.port, fps=args.fps,
                       out_dir=args.out_dir, embed_every=args.embed_every, seed=args.seed,
                       meaning=args.meaning if not args.reactive_only else (args.meaning or "none"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise ParameterError("live: the live page's server needs aiohttp (ComfyUI ships it; standalone: "
                             "pip install aiohttp)") from None
    from ..jobs.live import run_live
    from ..jobs.run import TqdmRun

    request = request_from_args(args)
    run = TqdmRun(args.device, show_progress=False)
    try:
        run_live(request, run, on_ready=lambda port: print(f"serving on port {port}", flush=True))
    except ParameterError as exc:  # the library names its parameter; the user typed the flag
        name = getattr(exc, "parameter", None)
        message = str(exc)
        if name and message.startswith(f"{name}:"):
            message = f"--{name.replace('_', '-')}:{message[len(name) + 1:]}"
        raise ParameterError(message, parameter=name) from None
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0
