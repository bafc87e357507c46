"""Overlap between a training set and the evaluation set: the same question, a near-duplicate question, the same
image.

Questions are compared, and near-duplicate questions and images found, through the indexes of
:mod:`medvlthinker.curate.near_duplicates`. Images match exactly when their decoded pixels hash the same
(:func:`medvlthinker.images.image_sha256`), whatever the file format, and nearly when their perceptual hashes
(:func:`perceptual_hash`) are within ``image_threshold`` bits.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medvlthinker.curate.near_duplicates import (
    DEFAULT_IMAGE_THRESHOLD,
    HASH_BITS,
    NearDuplicateIndex,
    NearImageIndex,
    char_ngrams,
    check_image_threshold,
    jaccard,
    normalize_question,
)

KINDS = ("exact_question", "near_question", "identical_image", "near_image")




# ------------------------------------------------------------------------------------------------------ images
def perceptual_hash(img) -> int:
    """The 64-bit pHash of a decoded image as an int (imagehash's ``phash``, hash_size 8).

    >>> from PIL import Image
    >>> perceptual_hash(Image.new("RGB", (40, 30), (9, 9, 9))) == perceptual_hash(Image.new("L", (80, 60), 9))
    True
    """
    import imagehash

    return int(str(imagehash.phash(img, hash_size=8)), 16)


def _hash_item(item: tuple[int, int, Any], perceptual: bool = False) -> tuple[int, int, str | None, int | None]:
    from medvlthinker.images import ImageDecodeError, decode_image, image_sha256

    position, image_position, image = item
    try:
        img = decode_image(image)
        return position, image_position, image_sha256(img), perceptual_hash(img) if perceptual else None
    except ImageDecodeError:
        return position, image_position, None, None


def _image_items(ds, batch_size: int = 64) -> Iterator[tuple[int, int, Any]]:
    if "images" not in ds.column_names:
        return
    position = 0
    # the arrow view gives the stored {bytes, path} dicts without decoding every image twice
    for batch in ds.select_columns(["images"]).with_format("arrow").iter(batch_size=batch_size):
        for images in batch.column("images").to_pylist():
            for image_position, image in enumerate(images or []):
                yield position, image_position, image
            position += 1


@dataclass
class ImageHashes:
    """Per row position with images: the pixel hash of each image, and (``perceptual``) its pHash."""

    pixels: dict[int, list[str]] = field(default_factory=dict)
    perceptual: dict[int, list[int]] = field(default_factory=dict)
    undecodable: list[int] = field(default_factory=list)  # row positions of images that cannot be decoded


def hash_images(ds, *, num_proc: int = 1, perceptual: bool = False, desc: str = "hashing images") -> ImageHashes:
    """Decode every image of ``ds`` once and hash it (an undecodable image hashes to nothing; its row position is
    listed in ``undecodable``)."""
    import functools

    from tqdm.auto import tqdm

    out = ImageHashes(defaultdict(list), defaultdict(list))
    work = functools.partial(_hash_item, perceptual=perceptual)
    items = _image_items(ds)
    if num_proc > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
            results = tqdm(pool.imap(work, items, chunksize=16), desc=desc, unit="img")
            for result in results:
                _collect(out, *result)
    else:
        for result in tqdm(map(work, items), desc=desc, unit="img"):
            _collect(out, *result)
    return ImageHashes(dict(out.pixels), dict(out.perceptual), out.undecodable)


def _collect(out: ImageHashes, position: int, _image_position: int, digest: str | None, phash: int | None) -> None:
    if digest:
        out.pixels[position].append(digest)
    else:
        out.undecodable.append(position)
    if phash is not None:
        out.perceptual[position].append(phash)


# ------------------------------------------------------------------------------------------------------ report
@dataclass
class OverlapReport:
    """Counts per eval benchmark, and every matching (train row, eval row) pair."""

    train_rows: int
    eval_rows: int
    threshold: float
    ngram: int
    with_options: bool
    images_compared: bool
    image_threshold: int | None = None
    # rows with an image that cannot be decoded, left out of the image comparison: counts and the first few
    undecodable_image_rows: dict[str, int] = field(default_factory=dict)
    undecodable_examples: list[dict[str, Any]] = field(default_factory=list)
    # eval dataset_name -> kind -> number of eval rows with at least one match of that kind
    eval_rows_matched: dict[str, dict[str, int]] = field(default_factory=dict)
    # kind -> number of train rows with at least one match of that kind
    train_rows_matched: dict[str, int] = field(default_factory=dict)
    matches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, with_matches: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not with_matches:
            out.pop("matches")
        return out

    def flagged_train_indices(self) -> set[tuple[str, int]]:
        """(dataset_name, dataset_index) of every training row with a match of any kind."""
        return {(m["train_dataset_name"], int(m["train_dataset_index"])) for m in self.matches}

    def examples(self, per_kind: int = 3) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Per eval benchmark and kind, the first ``per_kind`` matching pairs (by eval then train dataset_index)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for match in sorted(self.matches, key=lambda m: (m["eval_dataset_index"], m["train_dataset_index"])):
            for kind in match["kinds"]:
                shown = out[match["eval_dataset_name"]][kind]
                if len(shown) < per_kind:
                    shown.append(match)
        return {name: dict(kinds) for name, kinds in sorted(out.items())}

    def examples_text(self, per_kind: int = 2) -> str:
        """:meth:`examples` as lines: benchmark, kind, the two dataset_index values, distance or similarity."""
        lines = []
        for name, kinds in self.examples(per_kind).items():
            for kind, matches in kinds.items():
                for m in matches:
                    how = (f"pHash distance {m['image_distance']}" if kind == "near_image"
                           else f"question similarity {m['question_similarity']}")
                    lines.append(f"{name} {kind}: eval {m['eval_dataset_index']} ~ train "
                                 f"{m['train_dataset_name']} {m['train_dataset_index']} ({how})")
        return "\n".join(lines)

    def table(self) -> str:
        kinds = [*KINDS, "question_and_image"]
        head = f"{'benchmark':<18}" + "".join(f"{k:>20}" for k in kinds)
        lines = [head]
        for name in sorted(self.eval_rows_matched):
            counts = self.eval_rows_matched[name]
            lines.append(f"{name:<18}" + "".join(f"{counts.get(k, 0):>20}" for k in kinds))
        lines.append(f"{'train rows':<18}" + "".join(f"{self.train_rows_matched.get(k, 0):>20}" for k in kinds))
        return "\n".join(lines)


def _texts(rows: Mapping[str, list], with_options: bool) -> list[str]:
    from medvlthinker.schema import parse_options

    texts = []
    for i, question in enumerate(rows["question"]):
        text = question or ""
        if with_options:
            text += " " + " ".join(parse_options(rows["options"][i], strict=False).values())
        texts.append(normalize_question(text))
    return texts


def _options_key(options: str) -> tuple[str, ...]:
    from medvlthinker.schema import parse_options

    return tuple(sorted(normalize_question(v) for v in parse_options(options, strict=False).values()))


def find_overlap(
    train,
    eval_ds,
    *,
    threshold: float = 0.8,
    ngram: int = 4,
    with_options: bool = False,
    compare_images: bool = True,
    near_images: bool = False,
    image_threshold: int = DEFAULT_IMAGE_THRESHOLD,
    num_proc: int = 1,
) -> OverlapReport:
    """Every (train row, eval row) pair sharing a normalised question (exact), a near-duplicate question
    (n-gram Jaccard >= threshold, not exact), an identical image, or (``near_images``) a near-duplicate image
    (pHash Hamming distance <= ``image_threshold``, not identical), for two unified data sets."""
    check_image_threshold(image_threshold)
    from tqdm.auto import tqdm

    columns = ["question", "options", "dataset_name", "dataset_index"]
    tr, ev = train.select_columns(columns).to_dict(), eval_ds.select_columns(columns).to_dict()
    train_texts, eval_texts = _texts(tr, with_options), _texts(ev, with_options)
    exact: dict[str, list[int]] = defaultdict(list)
    for j, text in enumerate(eval_texts):
        if text:
            exact[text].append(j)
    index = NearDuplicateIndex(eval_texts, n=ngram, threshold=threshold)

    pairs: dict[tuple[int, int], dict[str, Any]] = {}
    seen: dict[str, list[tuple[int, float]]] = {}  # training sets repeat template questions; query each once
    for i, text in enumerate(tqdm(train_texts, desc="comparing questions", unit="row")):
        if not text:
            continue
        for j in exact.get(text, ()):
            pairs[(i, j)] = {"exact_question": True, "similarity": 1.0}
        if text not in seen:
            seen[text] = index.query(text)
        for j, similarity in seen[text]:
            if (i, j) not in pairs:
                pairs[(i, j)] = {"near_question": True, "similarity": similarity}

    if compare_images or near_images:
        eval_hashes = hash_images(eval_ds, num_proc=num_proc, perceptual=near_images, desc="hashing eval images")
        train_hashes = hash_images(train, num_proc=num_proc, perceptual=near_images, desc="hashing train images")
        by_hash: dict[str, list[int]] = defaultdict(list)
        for j, digests in eval_hashes.pixels.items():
            for digest in set(digests):
                by_hash[digest].append(j)
        for i, digests in train_hashes.pixels.items():
            for j in sorted({j for digest in set(digests) for j in by_hash.get(digest, ())}):
                pairs.setdefault((i, j), {})["identical_image"] = True
        if near_images:
            for (i, j), distance in near_image_pairs(train_hashes.perceptual, eval_hashes.perceptual,
                                                     image_threshold).items():
                flags = pairs.setdefault((i, j), {})
                if not flags.get("identical_image"):
                    flags["near_image"] = True
                flags["image_distance"] = distance

    report = OverlapReport(
        train_rows=len(train_texts), eval_rows=len(eval_texts), threshold=threshold, ngram=ngram,
        with_options=with_options, images_compared=compare_images or near_images,
        image_threshold=image_threshold if near_images else None,
    )
    if compare_images or near_images:
        _note_undecodable(report, {"train": (tr, train_hashes), "eval": (ev, eval_hashes)})
    eval_sets: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    train_sets: dict[str, set[int]] = defaultdict(set)
    for (i, j), flags in sorted(pairs.items()):
        kinds = [k for k in KINDS if flags.get(k)]
        if (flags.get("identical_image") or flags.get("near_image")) and (
                flags.get("exact_question") or flags.get("near_question")):
            kinds.append("question_and_image")
        for kind in kinds:
            eval_sets[ev["dataset_name"][j]][kind].add(j)
            train_sets[kind].add(i)
        similarity = flags.get("similarity")
        if similarity is None:
            similarity = jaccard(char_ngrams(train_texts[i], ngram), char_ngrams(eval_texts[j], ngram))
        report.matches.append({
            "train_dataset_name": tr["dataset_name"][i],
            "train_dataset_index": tr["dataset_index"][i],
            "eval_dataset_name": ev["dataset_name"][j],
            "eval_dataset_index": ev["dataset_index"][j],
            "kinds": kinds,
            "question_similarity": round(similarity, 4),
            "image_distance": flags.get("image_distance"),
            "same_options": _options_key(tr["options"][i]) == _options_key(ev["options"][j]),
            "train_question": tr["question"][i],
            "eval_question": ev["question"][j],
        })
    report.eval_rows_matched = {
        name: {kind: len(eval_sets[name].get(kind, ())) for kind in (*KINDS, "question_and_image")}
        for name in sorted(set(ev["dataset_name"]))
    }
    report.train_rows_matched = {kind: len(train_sets.get(kind, ())) for kind in (*KINDS, "question_and_image")}
    return report


def _note_undecodable(report: OverlapReport, sides: Mapping[str, tuple[Mapping[str, list], ImageHashes]]) -> None:
    """Count the rows whose images could not be compared, name the first ones, and warn once."""
    import warnings

    for side, (rows, hashes) in sides.items():
        positions = sorted(set(hashes.undecodable))
        report.undecodable_image_rows[side] = len(positions)
        report.undecodable_examples += [{"side": side, "dataset_name": rows["dataset_name"][i],
                                         "dataset_index": rows["dataset_index"][i]} for i in positions[:3]]
    if report.undecodable_examples:
        first = ", ".join(f"{e['side']} dataset_name={e['dataset_name']}, dataset_index={e['dataset_index']}"
                          for e in report.undecodable_examples[:3])
        warnings.warn(f"images of {report.undecodable_image_rows} rows cannot be decoded and were left out of the "
                      f"image comparison (first: {first}); their questions were still compared", stacklevel=3)


def near_image_pairs(train: Mapping[int, Sequence[int]], eval_: Mapping[int, Sequence[int]],
                     threshold: int) -> dict[tuple[int, int], int]:
    """``{(train position, eval position): smallest distance}`` over the rows' pHashes within ``threshold``."""
    eval_rows = [j for j, hashes in eval_.items() for _ in hashes]
    train_rows = [i for i, hashes in train.items() for _ in hashes]
    if not eval_rows or not train_rows:
        return {}
    index = NearImageIndex([h for hashes in eval_.values() for h in hashes], threshold=threshold)
    out: dict[tuple[int, int], int] = {}
    for q, e, d in zip(*index.pairs([h for hashes in train.values() for h in hashes])):
        key = (train_rows[int(q)], eval_rows[int(e)])
        out[key] = min(int(d), out.get(key, HASH_BITS))
    return out


def without_flagged(train, report: OverlapReport):
    """``train`` without the rows :meth:`OverlapReport.flagged_train_indices` names."""
    flagged = report.flagged_train_indices()
    keep = [p for p, (name, index) in enumerate(zip(train["dataset_name"], train["dataset_index"]))
            if (name, int(index)) not in flagged]
    return train.select(keep)


def write_overlap(report: OverlapReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``overlap_report.json`` (counts and settings), ``overlap_matches.jsonl`` (one pair a line),
    ``overlap_table.txt`` and ``overlap_examples.json`` (a few pairs per benchmark and kind) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out_dir / "overlap_report.json",
        "matches": out_dir / "overlap_matches.jsonl",
        "table": out_dir / "overlap_table.txt",
    }
    paths["report"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["matches"].write_text(
        "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in report.matches), encoding="utf-8"
    )
    paths["table"].write_text(report.table() + "\n", encoding="utf-8")
    paths["examples"] = out_dir / "overlap_examples.json"
    paths["examples"].write_text(json.dumps(report.examples(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
