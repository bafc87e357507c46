"""Images: decoding whatever a data set holds, the PMC-VQA resize rule, content hashes.

Rows carry images as PIL images, Hugging Face image dicts (``{"bytes": ..., "path": ...}``), file paths or raw
bytes; ``decode_image`` turns any of them into an RGB PIL image or raises ``ImageDecodeError`` saying what failed.

Two rules hold wherever an image is read:

- An image stored as a file path is read only inside its data set's folder (:func:`check_inside`): a row of
  ``../../secret/x.png`` or ``/etc/...`` would otherwise be opened, embedded into a training set or sent to a remote
  endpoint. ``--allow_outside_images`` lifts the rule for a data set the user trusts.
- An image Qwen2.5-VL cannot take is refused when it is decoded, so the stage that checks images names its row
  before any model loads: a side ratio above ``MAX_ASPECT_RATIO`` (qwen-vl-utils' and the image processor's limit)
  and a picture over ``MAX_IMAGE_PIXELS`` (a decompression bomb, which PIL would only warn about below twice that).
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

# qwen-vl-utils' MAX_RATIO (vision_process.py) and the Qwen2-VL image processor's smart_resize: both raise on an
# image whose long side is more than 200 times its short side.
MAX_ASPECT_RATIO = 200

# PIL's own decompression-bomb bound (Image.MAX_IMAGE_PIXELS, about 89 M pixels): above it PIL only warns, and a
# 16-bit PNG of a few kB then takes gigabytes. No medical figure of the benchmarks comes near it.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS

ALLOW_OUTSIDE_FLAG = "--allow_outside_images"


class ImageDecodeError(UserError):
    """An image that cannot be decoded; the message says which source and why."""


class OutsideImageError(ImageDecodeError):
    """An image path that leads outside its data set's folder."""


def check_inside(path: str | os.PathLike, bases: list[str | os.PathLike], *, allow_outside: bool = False) -> str:
    """The absolute path of ``path`` when it lies inside one of ``bases``, else :class:`OutsideImageError`;
    ``allow_outside`` skips the check.

    The test is on the path as written (``..`` and absolute paths are what a row controls); a symbolic link inside
    the folder is the data set owner's choice and is followed (a folder of links into shared storage works).

    >>> import tempfile; base = tempfile.mkdtemp()
    >>> check_inside(os.path.join(base, "a", "x.png"), [base]) == os.path.join(base, "a", "x.png")
    True
    >>> check_inside(os.path.join(base, "..", "x.png"), [base])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    medvlthinker.images.OutsideImageError: image path ... is outside the data set's folder ...
    """
    real = os.path.abspath(path)
    if allow_outside:
        return real
    for base in bases:
        root = os.path.abspath(base)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
    shown = ", ".join(str(b) for b in bases) or "(none: this source has no folder of its own)"
    raise OutsideImageError(
        None, f"image path {str(path)!r} is outside the data set's folder {shown}",
        fix=f"store the image inside that folder (paths are relative to it) or embed its bytes; pass "
            f"{ALLOW_OUTSIDE_FLAG} only for a data set you trust",
    )


def check_model_limits(img: Image.Image) -> None:
    """Raise :class:`ImageDecodeError` for an image Qwen2.5-VL cannot take (see the module docstring); the caller
    names the row and the fix (replace the image or drop the row).

    >>> check_model_limits(Image.new("RGB", (10, 2600)))
    Traceback (most recent call last):
    medvlthinker.images.ImageDecodeError: the image is 10x2600 pixels, a side ratio of 260 (Qwen2.5-VL takes at most 200: crop or pad it)
    """
    w, h = img.size
    if min(w, h) < 1:
        raise ImageDecodeError(f"the image is {w}x{h} pixels (an empty side)")
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise ImageDecodeError(f"the image is {w}x{h} pixels, a side ratio of {max(w, h) / min(w, h):.0f} "
                               f"(Qwen2.5-VL takes at most {MAX_ASPECT_RATIO}: crop or pad it)")
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"the image is {w}x{h} pixels, over the {MAX_IMAGE_PIXELS} pixels PIL accepts (a "
                               "decompression bomb, or a figure to downscale)")


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as qwen-vl-utils' ``to_rgb`` makes it, which the original hands every image to: an RGBA image is pasted
    on white through its alpha channel (a plain RGB conversion would show the colours hidden under transparent
    pixels), any other mode is converted.

    >>> img = Image.new("RGBA", (2, 1), (255, 0, 0, 0)); to_rgb(img).getpixel((0, 0))
    (255, 255, 255)
    """
    if img.mode == "RGB":
        return img
    if img.mode == "RGBA":
        out = Image.new("RGB", img.size, (255, 255, 255))
        out.paste(img, mask=img.split()[3])
        return out
    return img.convert("RGB")


def open_checked(fp: Any) -> Image.Image:
    """``Image.open`` whose header is checked against :func:`check_model_limits` before any pixel is decoded."""
    img = Image.open(fp)
    check_model_limits(img)
    return img


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"image dict (path={obj.get('path')!r}, {len(obj.get('bytes') or b'')} bytes)"
    if isinstance(obj, (bytes, bytearray)):
        return f"{len(obj)} bytes"
    return repr(obj)[:120]


def _open(obj: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Any stored form of an image -> an opened ``PIL.Image`` (header read and checked against
    :func:`check_model_limits`, pixels not decoded yet)."""
    if isinstance(obj, Image.Image):
        check_model_limits(obj)
        return obj
    if isinstance(obj, dict):
        if obj.get("bytes"):
            return open_checked(io.BytesIO(obj["bytes"]))
        if obj.get("path"):
            return _open(obj["path"], base_dir)
        raise ImageDecodeError("image dict has neither bytes nor path")
    if isinstance(obj, (bytes, bytearray)):
        return open_checked(io.BytesIO(bytes(obj)))
    if isinstance(obj, (str, os.PathLike)):
        path = os.path.join(base_dir, obj) if base_dir and not os.path.isabs(obj) else obj
        if not os.path.exists(path):
            raise ImageDecodeError(f"image file not found: {path}")
        return open_checked(path)
    raise ImageDecodeError(f"unsupported image value of type {type(obj).__name__}")


def decode_image(obj: Any, base_dir: str | os.PathLike | None = None) -> Image.Image:
    """Any stored form of an image -> a fully loaded RGB ``PIL.Image`` (alpha composited on white, :func:`to_rgb`).

    ``base_dir`` resolves relative paths (a jsonl file's image folder). An image the model cannot take
    (:func:`check_model_limits`) raises :class:`ImageDecodeError` before its pixels are decoded.
    """
    try:
        img = _open(obj, base_dir)
        img.load()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot decode {_describe(obj)}: {e}") from e
    return to_rgb(img)


def check_image(obj: Any, base_dir: str | os.PathLike | None = None) -> tuple[int, int]:
    """Check a stored image without decoding its pixels; return its size.

    Reads the header (format, size, mode) and lets PIL verify what it can without decoding (a PNG's chunk
    checksums, which a truncated or corrupted file fails). A pass over a large data set at a fraction of a full
    decode's cost; an image whose compressed pixel data is broken beyond that still fails when it is decoded for
    use, naming its row.
    """
    try:
        img = _open(obj, base_dir)
        size = img.size
        if not isinstance(obj, Image.Image):
            img.verify()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
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
