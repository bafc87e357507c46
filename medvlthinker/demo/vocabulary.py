"""The one vocabulary of the synthetic data (:mod:`.synthetic` for the tests, :mod:`.demo_task` for the demo): the
palette, the shapes and how each is drawn, the option letters, and the unified row both build."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image, ImageDraw

# Options are drawn from the front of the palette in this order: the demo's pictures use the first four colours,
# and the fifth is a distractor of the 5-option benchmark only.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 60, 230),
    "yellow": (235, 215, 30),
    "purple": (150, 40, 180),
}
SHAPES = ("circle", "square", "triangle", "cross")
LETTERS = "ABCDE"


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, fill: tuple[int, int, int]) -> None:
    """One figure of ``shape`` with centre (cx, cy) and half-size ``r``."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        w = r // 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; the shapes are {SHAPES}")


def image_to_png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def row(*, question, options, label, images, reasoning, dataset_name, dataset_index, misc=None) -> dict[str, Any]:
    """A row in the unified schema (docs/protocol.md section 1)."""
    return {
        "images": images,
        "question": question,
        "options": json.dumps(options),
        "answer_label": label,
        "answer": options[label],
        "reasoning": reasoning,
        "dataset_name": dataset_name,
        "dataset_index": dataset_index,
        "hash": None,
        "misc": json.dumps(misc or {}),
    }
