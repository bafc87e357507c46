"""What the eval shows the model in place of a row's images: the visual-reliance experiment (docs/experiments.md).

``--image_mode`` of the eval command (:class:`~medvlthinker.inference.run_config.RunConfig`):

- ``as_is`` (the paper): the row's own images.
- ``blank``: each image replaced by a uniform grey image of the same size (:data:`BLANK_GREY`), so the prompt, the
  image count and the image tokens are those of ``as_is``; only the content is gone.
- ``shuffled``: each row gets the images of another row of the same benchmark with the same number of images: in
  every group (dataset_name, image count), a seeded random cycle (``--seed``) through the group's distinct
  pictures, so no row is shown its own picture (:func:`shuffle_donors`). A group with a single picture cannot be
  shuffled: its rows get blank images, and the run says so.
- ``none``: no images at all (the text-only ablation, ``--ignore_image``): the image placeholders leave the prompt.

Rows without images are the same in every mode. The transformation is applied to the rows the runner streams
(:func:`with_image_mode`), before the request builder decodes them, so every backend sees the same thing.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

IMAGE_MODES = ("as_is", "blank", "shuffled", "none")
"""The values of ``--image_mode``; ``as_is`` is the paper's."""

BLANK_GREY = (128, 128, 128)
"""The colour of a blank image: mid grey, the value that carries no brightness cue either way."""


def check_image_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`IMAGE_MODES`; else ValueError naming the flag and the fix."""
    if mode not in IMAGE_MODES:
        raise ValueError(f"--image_mode {mode!r} is not an image mode; fix: one of {', '.join(IMAGE_MODES)}")
    return mode


def image_size(image: Any) -> tuple[int, int]:
    """(width, height) of a stored image, read from its header (the pixels are not decoded)."""
    from PIL import Image

    from medvlthinker.images import decode_image

    if isinstance(image, Image.Image):
        return image.size
    data = image.get("bytes") if isinstance(image, Mapping) else image
    if isinstance(data, (bytes, bytearray)):
        with Image.open(io.BytesIO(bytes(data))) as img:
            return img.size
    return decode_image(image).size


def blank_image(size: tuple[int, int]) -> dict[str, Any]:
    """A uniform :data:`BLANK_GREY` PNG of ``size``, in the stored form (``{"bytes", "path"}``).

    >>> from PIL import Image; img = Image.open(io.BytesIO(blank_image((3, 2))["bytes"]))
    >>> img.size, sorted(set(img.getdata()))
    ((3, 2), [(128, 128, 128)])
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, BLANK_GREY).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def shuffle_donors(dataset_names: Sequence[str], dataset_indices: Sequence[int],
                   image_keys: Sequence[tuple[str, ...] | None], seed: int) -> tuple[dict[int, int], list[int]]:
    """Whose images each row shows in ``shuffled`` mode: ``({dataset_index: donor position}, unshuffled)``.

    Positions index the three sequences (one entry a row); ``image_keys`` holds a row's image contents (one hash
    an image; None or empty for a row without images). Rows are grouped by (dataset_name, image count), and in a
    group by their images: rows asking about the same picture (SLAKE and VQA-RAD ask several questions of one
    image) form one picture set. The picture sets, in the order of their first dataset_index, are put in a random
    order (``random.Random`` seeded with the seed, the benchmark and the count, so a group's order does not depend
    on the other groups or on the row order of the data set) and the rows of each set take the images of the next
    set in that order, the last set the first's: no row is shown its own picture. ``unshuffled`` holds the
    dataset_index of the rows whose group has a single picture set.

    >>> keys = [("p",), ("q",), ("q",), ("r",), ("s",), None]
    >>> donors, alone = shuffle_donors(["a", "a", "a", "a", "b", "a"], [10, 11, 12, 13, 14, 15], keys, seed=0)
    >>> sorted(donors), alone
    ([10, 11, 12, 13], [14])
    >>> all(keys[donors[i]] != keys[p] for p, i in enumerate([10, 11, 12, 13])), donors[11] == donors[12]
    (True, True)
    """
    groups: dict[tuple[str, int], dict[tuple[str, ...], list[int]]] = defaultdict(dict)
    for pos in sorted(range(len(dataset_names)), key=lambda p: int(dataset_indices[p])):
        key = tuple(image_keys[pos] or ())
        if key:
            groups[(dataset_names[pos], len(key))].setdefault(key, []).append(pos)
    donors: dict[int, int] = {}
    alone: list[int] = []
    for (name, count), sets in sorted(groups.items()):
        members = list(sets.values())
        if len(members) == 1:
            alone.extend(int(dataset_indices[p]) for p in members[0])
            continue
        order = random.Random(f"{seed}:{name}:{count}").sample(members, len(members))
        for here, there in zip(order, order[1:] + order[:1]):
            for pos in here:
                donors[int(dataset_indices[pos])] = there[0]
    return donors, sorted(alone)


def image_keys(ds) -> list[tuple[str, ...] | None]:
    """Per row of a unified ``datasets.Dataset``: the sha1 of each image's stored bytes (of its path when it has no
    bytes), None for a row without images. The images are read as stored, a few rows at a time."""
    from medvlthinker.data.paging import raw_rows

    if "images" not in ds.column_names:
        return [None] * len(ds)
    out: list[tuple[str, ...] | None] = []
    for images in (row["images"] for row in raw_rows(ds.select_columns(["images"]))):
        if not images:
            out.append(None)
            continue
        out.append(tuple(hashlib.sha1(image.get("bytes") or str(image.get("path")).encode()).hexdigest()
                         for image in images))
    return out


class ImageSwap:
    """The ``blank`` / ``shuffled`` transformation of rows. ``source`` is the whole data set of the run (its images
    are read as stored), so a rank or a Ray worker holding part of the rows still draws the donors from every row."""

    def __init__(self, mode: str, source=None, seed: int = 0) -> None:
        self.mode = check_image_mode(mode)
        self.source = source
        self.donors: dict[int, int] = {}
        self.unshuffled: list[int] = []
        if mode == "shuffled":
            if source is None:
                raise ValueError("shuffled images need the run's whole data set as the source of the donors")
            self.donors, self.unshuffled = shuffle_donors(source["dataset_name"], source["dataset_index"],
                                                          image_keys(source), seed)

    def images(self, row: Mapping[str, Any]) -> list | None:
        """The images ``row`` is shown with."""
        stored = row.get("images")
        if not stored or self.mode in ("as_is", "none"):
            return stored
        donor = self.donors.get(int(row["dataset_index"])) if self.mode == "shuffled" else None
        if donor is not None:
            return list(self.source.with_format("arrow")[donor:donor + 1].to_pylist()[0]["images"])
        return [blank_image(image_size(image)) for image in stored]

    def __call__(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for row in rows:
            if self.mode in ("as_is", "none") or not row.get("images"):
                yield row
            else:
                yield {**row, "images": self.images(row)}


def with_image_mode(rows: Iterable[Mapping[str, Any]], config, source=None) -> Iterable[Mapping[str, Any]]:
    """``rows`` as the run's ``--image_mode`` shows them (``as_is`` and ``none`` pass them through: the request
    builder drops the images of ``none`` itself). ``source`` is the run's whole data set, from which ``shuffled``
    draws the donor pictures."""
    mode = getattr(config, "image_mode", "as_is")
    if mode in ("as_is", "none"):
        return rows
    swap = ImageSwap(mode, source if mode == "shuffled" else None, seed=config.seed)
    if swap.unshuffled:
        import sys

        print(f"--image_mode shuffled: {len(swap.unshuffled)} row(s) whose (benchmark, image count) group has a "
              f"single picture get blank images: dataset_index {swap.unshuffled[:10]}", file=sys.stderr, flush=True)
    return swap(rows)
