"""Images: decoding whatever a data set holds, the PMC-VQA resize rule, content hashes.

Rows carry images as PIL images, Hugging Face image dicts (``{"bytes": ..., "path": ...}``), file paths or raw
bytes; ``decode_image`` turns any of them into an RGB PIL image or raises ``ImageDecodeError`` saying what failed.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from PIL import Image, UnidentifiedImageError

from medvlthinker.errors import UserError

# PMC-VQA training images (docs/protocol.md section 7): a side under 28 px -> the short side goes to 28; else a side
# over 1024 px -> the long side goes to 1024; bilinear, aspect ratio kept. 28 is one merged Qwen2-VL patch.
PMC_MIN_SIDE = 28
PMC_MAX_SIDE = 1024

# qwen-vl-utils' resize bounds of every image a Qwen2.5-VL model sees (docs/protocol.md section 2), also the
# image processor settings of the released checkpoints: 4 and 16384 merged 28 x 28 patches.
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28


class ImageDecodeError(UserError):
    """An image that cannot be decoded; the message says which source and why."""


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"image dict (path={obj.get('path')!r}, {len(obj.get('bytes') or b'')} bytes)"
    if isinstance(obj, (bytes, bytearray)):
        return f"{len(obj)} bytes"
    return repr(obj)[:120]


def _open(obj: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Any stored form of an image -> an opened ``PIL.Image`` (header read, pixels not decoded yet)."""
    if isinstance(obj, Image.Image):
        return obj
    if isinstance(obj, dict):
        if obj.get("bytes"):
            return Image.open(io.BytesIO(obj["bytes"]))
        if obj.get("path"):
            return _open(obj["path"], base_dir)
        raise ImageDecodeError("image dict has neither bytes nor path")
    if isinstance(obj, (bytes, bytearray)):
        return Image.open(io.BytesIO(bytes(obj)))
    if isinstance(obj, (str, os.PathLike)):
        path = os.path.join(base_dir, obj) if base_dir and not os.path.isabs(obj) else obj
        if not os.path.exists(path):
            raise ImageDecodeError(f"image file not found: {path}")
        return Image.open(path)
    raise ImageDecodeError(f"unsupported image value of type {type(obj).__name__}")


def decode_image(obj: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Any stored form of an image -> a fully loaded RGB ``PIL.Image``.

    ``base_dir`` resolves relative paths (a jsonl file's image folder).
    """
    try:
        img = _open(obj, base_dir)
        img.load()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"cannot decode {_describe(obj)}: {e}") from e
    return img if img.mode == "RGB" else img.convert("RGB")


def check_image(obj: Any, base_dir: str | os.PathLike | None = None) -> tuple[int, int]:
    """Check a stored image without decoding its pixels; return its size.

    Reads the header (format, size, mode) and lets PIL verify what it can without decoding (a PNG's chunk
    checksums, which a truncated or corrupted file fails). A pass over a large data set at a fraction of a full
    decode's cost; an image whose compressed pixel data is broken beyond that still fails when it is decoded for
    use, naming its row.
    """
    if isinstance(obj, Image.Image):
        return obj.size
    try:
        img = _open(obj, base_dir)
        size = img.size
        img.verify()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"cannot decode {_describe(obj)}: {e}") from e
    return size


def pmc_resize(img: Image.Image) -> Image.Image:
    """The PMC-VQA training-image rule (the evaluation images are never resized beforehand).

    The new size is computed as the original's resize_image.py does, ``int(side * (target / other_side))``
    (truncated, not rounded), so the pixels match the released set: 1500x1000 becomes 1024x682, not 1024x683.

    >>> pmc_resize(Image.new("RGB", (1500, 1000))).size, pmc_resize(Image.new("RGB", (10, 2000))).size
    ((1024, 682), (28, 5600))
    """
    w, h = img.size
    if w < PMC_MIN_SIDE or h < PMC_MIN_SIDE:
        # The short-side rule wins even when it pushes the long side past 1024 (10x2000 -> 28x5600), as the original.
        target = PMC_MIN_SIDE
        new = (target, int(h * (target / w))) if w < h else (int(w * (target / h)), target)
    elif w > PMC_MAX_SIDE or h > PMC_MAX_SIDE:
        target = PMC_MAX_SIDE
        new = (target, int(h * (target / w))) if w > h else (int(w * (target / h)), target)
    else:
        return img
    # max(1, ...): the original would pass a 0 px side to PIL and fail; only absurd aspect ratios get there
    return img.resize((max(1, new[0]), max(1, new[1])), Image.BILINEAR)


def image_sha256(obj: Any) -> str:
    """Content hash of the decoded pixels (format-independent: the same picture as PNG or JPEG-lossless match)."""
    img = decode_image(obj)
    h = hashlib.sha256()
    h.update(f"{img.size[0]}x{img.size[1]}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def to_png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
