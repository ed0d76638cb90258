"""Convert a model checkpoint to our ``.safetensors`` format.

    python -m sgim_nodes.convert IN OUT.safetensors        (or: python -m sgim_nodes convert ...)

IN may be a StyleGAN2 generator (rosinality ``.pt``, NVlabs ``.pkl`` incl. conditional ADA snapshots,
TensorFlow StyleGAN2 / StyleGAN2-ADA ``.pkl``, a safetensors state dict), an NVlabs StyleGAN3 (T or R)
snapshot ``.pkl``, or an audio-encoder checkpoint (the paper's ``.pth``). For a conditional generator,
``--class-names FILE`` (one name per line, in class order) stores the class names in OUT, so that nodes
and ``edit --class`` accept them. Nothing from IN is executed: the same safe
loaders as everywhere else read it. The result is written atomically; IN is never overwritten,
and an existing OUT only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ModelFileError, ParameterError, UnsafeFileError


def _parser() -> argparse.ArgumentParser:
    from .cli_help import command_parser

    parser = command_parser("convert", __doc__)
    parser.add_argument("input", type=Path, help="checkpoint to convert (.pt, .pth, .pkl, .safetensors)")
    parser.add_argument("output", type=Path, help="where to write the .safetensors file")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it already exists")
    parser.add_argument("--class-names", type=Path, help="conditional generators: text file with one class name "
                                                         "per line, in class order")
    return parser


def convert(input_path: Path, output_path: Path, overwrite: bool = False, class_names: Path | None = None) -> str:
    """Convert one file; returns a one-line description of what was written."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise ModelFileError(f"{input_path}: file not found (expected a checkpoint to convert)")
    if output_path.suffix.lower() != ".safetensors":
        raise ParameterError(f"output: expected a .safetensors file name, got {output_path}")
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise ParameterError(f"output: {output_path} is the input file; choose another name (the input is "
                             "never overwritten)")
    if output_path.exists() and not overwrite:
        raise ParameterError(f"output: {output_path} already exists (pass --overwrite to replace it)")
    from .fileio import check_output_file

    check_output_file(output_path, "output")

    from .stylegan import load_generator, save_generator

    try:
        generator = load_generator(input_path)
    except UnsafeFileError:
        raise
    except ModelFileError as generator_error:
        return _convert_audio_encoder(input_path, output_path, generator_error)
    if class_names is not None:
        from .stylegan.loaders import check_class_names

        try:
            lines = Path(class_names).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ParameterError(f"--class-names: cannot read {class_names} ({exc})") from None
        generator.class_names = check_class_names([n for n in lines if n.strip()], generator.c_dim, "--class-names")
    save_generator(generator, output_path)
    family = "StyleGAN3" if getattr(generator, "family", "stylegan2") == "stylegan3" else "StyleGAN2"
    classes = f", {generator.c_dim} classes" if getattr(generator, "c_dim", 0) else ""
    return (f"{family} generator ({generator.config.source_format}, {generator.resolution} px, "
            f"{generator.num_ws} W+ layers{classes}) -> {output_path}")


def _convert_audio_encoder(input_path: Path, output_path: Path, generator_error: ModelFileError) -> str:
    try:
        from .audio import load_audio_encoder, save_audio_encoder
    except ImportError as exc:  # the audio package is optional for this command
        raise ModelFileError(f"{generator_error} (audio-encoder conversion is unavailable: {exc})") from None
    try:
        encoder = load_audio_encoder(input_path)
    except UnsafeFileError:
        raise
    except ModelFileError as audio_error:
        raise ModelFileError(f"{input_path}: neither a StyleGAN2/3 generator nor an audio encoder.\n"
                             f"  as a generator: {generator_error}\n  as an audio encoder: {audio_error}") from None
    save_audio_encoder(encoder, output_path)
    backbone = getattr(encoder, "config", {}).get("backbone", "?")
    return f"audio encoder ({backbone}) -> {output_path}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    print(convert(args.input, args.output, overwrite=args.overwrite, class_names=args.class_names))
    return 0


if __name__ == "__main__":
    from .errors import run_command

    raise SystemExit(run_command(main))
