"""Reading a picture file with Pillow, its decoded size bounded before any pixel is decoded.

A picture file is a claim of a size: a few KB of PNG can say 50,000 x 50,000 pixels, and text
chunks can inflate to gigabytes. :func:`read_picture` reads the header first (Pillow's ``open`` is
lazy), refuses more than ``limits.MAX_PICTURE_PIXELS`` pixels, and turns Pillow's own refusals
(decompression bombs, oversized text chunks, truncated data) into a :class:`ParameterError` naming
the file; only then are the pixels decoded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .errors import ParameterError


def read_picture(path: str | os.PathLike, name: str = "image"):
    """The first frame of ``path`` as a loaded PIL image (detached from the file), or a
    :class:`ParameterError` for ``name`` saying why it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    from .limits import MAX_PICTURE_PIXELS

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{name}: file not found: {path}" if not path.is_dir() else
                             f"{name}: {path} is a folder, not a picture", parameter=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a warning only, by default
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PICTURE_PIXELS:
                    raise ParameterError(
                        f"{name}: {path} says it is {width:,} x {height:,} pixels, more than the "
                        f"{MAX_PICTURE_PIXELS:,} a picture may have here; shrink it first (nothing was decoded)",
                        parameter=name)
                image.load()
                return image.copy()
    except ParameterError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ParameterError(f"{name}: {path} is refused as a decompression bomb ({exc})", parameter=name) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # ValueError: "Decompressed Data Too Large" (PNG text chunks); SyntaxError: broken headers
        what = "not a picture Pillow can read" if isinstance(exc, UnidentifiedImageError) else "unreadable"
        raise ParameterError(f"{name}: {path} is {what} ({type(exc).__name__}: {str(exc)[:200]})",
                             parameter=name) from None
