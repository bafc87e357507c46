"""Overlap between a training set and the evaluation set: the same question, a near-duplicate question, the same
image.

Questions are compared after :func:`normalize_question` (Unicode NFKC, lower case, ``<image n>`` tags and
punctuation removed, whitespace collapsed). A near-duplicate is a pair whose character n-gram sets (default n=4)
have a Jaccard similarity of at least the threshold (default 0.8). An all-pairs comparison (177k x 8k questions)
would take hours in Python, so candidates come from an inverted index over each eval question's n-gram *prefix*
(prefix filtering: with the n-grams in one global order, rarest first, two sets with Jaccard >= t must share one
of the first ``|x| - ceil(t |x|) + 1`` n-grams of each), which finds every pair above the threshold while scoring
only a few candidates per question. Images match when their decoded pixels hash the same
(:func:`medvlthinker.images.image_sha256`), whatever the file format.

>>> normalize_question("<image 1> What is  shown in the CT-scan?")
'what is shown in the ct scan'
>>> index = NearDuplicateIndex(["what is shown in the ct scan", "which organ is enlarged"], threshold=0.7)
>>> [(i, round(s, 2)) for i, s in index.query("what is shown on the ct scan")]
[(0, 0.72)]
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_IMAGE_TAG = re.compile(r"<image\s*\d*>", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)

KINDS = ("exact_question", "near_question", "identical_image")


def normalize_question(text: str | None) -> str:
    """Lower case, NFKC, ``<image n>`` tags and punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text or "")
    text = _IMAGE_TAG.sub(" ", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def char_ngrams(text: str, n: int = 4) -> frozenset[str]:
    """The set of character n-grams of ``text`` (the text itself when shorter than n)."""
    if len(text) <= n:
        return frozenset([text]) if text else frozenset()
    return frozenset(text[i : i + n] for i in range(len(text) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _prefix_length(size: int, threshold: float) -> int:
    # the 1e-9 keeps t*|x| = 4.000000001 from rounding up to 5 and shortening the prefix below what is safe
    return size - math.ceil(threshold * size - 1e-9) + 1


class NearDuplicateIndex:
    """An index over (already normalised) texts that returns every text with n-gram Jaccard >= ``threshold``."""

    def __init__(self, texts: Sequence[str], *, n: int = 4, threshold: float = 0.8) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.n, self.threshold = n, threshold
        gram_sets = [char_ngrams(t, n) for t in texts]
        frequency = Counter(g for s in gram_sets for g in s)
        # one global order for both sides, rarest first; n-grams are replaced by their rank (int sets intersect
        # several times faster than string sets)
        self.rank = {g: r for r, g in enumerate(sorted(frequency, key=lambda g: (frequency[g], g)))}
        self.sets = [frozenset(self.rank[g] for g in s) for s in gram_sets]
        self.sizes = [len(s) for s in self.sets]
        self.postings: dict[int, list[int]] = defaultdict(list)
        for i, ranks in enumerate(self.sets):
            for r in sorted(ranks)[: _prefix_length(len(ranks), threshold)]:
                self.postings[r].append(i)

    def _ranks(self, text: str) -> frozenset[int]:
        # n-grams absent from the index come first in the order (negative ranks); they can match nothing
        grams = char_ngrams(text, self.n)
        unseen = sorted(g for g in grams if g not in self.rank)
        return frozenset([self.rank[g] for g in grams if g in self.rank] + [-1 - k for k in range(len(unseen))])

    def query(self, text: str) -> list[tuple[int, float]]:
        """``[(position, similarity), ...]`` of the indexed texts at or above the threshold, by position."""
        ranks = self._ranks(text)
        if not ranks:
            return []
        size = len(ranks)
        low, high = self.threshold * size - 1e-9, size / self.threshold + 1e-9
        candidates: set[int] = set()
        for r in sorted(ranks)[: _prefix_length(size, self.threshold)]:
            posting = self.postings.get(r)
            if posting:
                candidates.update(posting)
        hits = []
        sizes, sets, threshold = self.sizes, self.sets, self.threshold
        for i in sorted(candidates):
            other_size = sizes[i]
            if not low <= other_size <= high:
                continue
            inter = len(ranks & sets[i])
            similarity = inter / (size + other_size - inter)
            if similarity >= threshold:
                hits.append((i, similarity))
        return hits


# ------------------------------------------------------------------------------------------------------ images
def _hash_item(item: tuple[int, int, Any]) -> tuple[int, int, str | None]:
    from medvlthinker.images import ImageDecodeError, image_sha256

    position, image_position, image = item
    try:
        return position, image_position, image_sha256(image)
    except ImageDecodeError:
        return position, image_position, None


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


def image_hashes(ds, *, num_proc: int = 1, desc: str = "hashing images") -> dict[int, list[str]]:
    """``{row position: [pixel hash per image]}`` for rows with images (an undecodable image hashes to nothing)."""
    from tqdm.auto import tqdm

    out: dict[int, list[str]] = defaultdict(list)
    items = _image_items(ds)
    if num_proc > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
            for position, _, digest in tqdm(pool.imap(_hash_item, items, chunksize=16), desc=desc, unit="img"):
                if digest:
                    out[position].append(digest)
    else:
        for position, _, digest in tqdm(map(_hash_item, items), desc=desc, unit="img"):
            if digest:
                out[position].append(digest)
    return dict(out)


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
    num_proc: int = 1,
) -> OverlapReport:
    """Every (train row, eval row) pair sharing a normalised question (exact), a near-duplicate question
    (n-gram Jaccard >= threshold, not exact) or an identical image, for two unified data sets."""
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

    if compare_images:
        eval_hashes = image_hashes(eval_ds, num_proc=num_proc, desc="hashing eval images")
        by_hash: dict[str, list[int]] = defaultdict(list)
        for j, digests in eval_hashes.items():
            for digest in set(digests):
                by_hash[digest].append(j)
        for i, digests in image_hashes(train, num_proc=num_proc, desc="hashing train images").items():
            for j in sorted({j for digest in set(digests) for j in by_hash.get(digest, ())}):
                pairs.setdefault((i, j), {})["identical_image"] = True

    report = OverlapReport(
        train_rows=len(train_texts), eval_rows=len(eval_texts), threshold=threshold, ngram=ngram,
        with_options=with_options, images_compared=compare_images,
    )
    eval_sets: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    train_sets: dict[str, set[int]] = defaultdict(set)
    for (i, j), flags in sorted(pairs.items()):
        kinds = [k for k in KINDS if flags.get(k)]
        if flags.get("identical_image") and (flags.get("exact_question") or flags.get("near_question")):
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


def write_overlap(report: OverlapReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``overlap_report.json`` (counts and settings), ``overlap_matches.jsonl`` (one pair a line) and
    ``overlap_table.txt`` in ``out_dir``."""
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
    return paths
