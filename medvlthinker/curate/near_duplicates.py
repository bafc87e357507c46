"""Near-duplicate indexes: questions by character n-grams, images by perceptual hash (used by
:mod:`medvlthinker.curate.overlap`).

Questions are compared after :func:`normalize_question` (Unicode NFKC, lower case, ``<image n>`` tags and
punctuation removed, whitespace collapsed). A near-duplicate is a pair whose character n-gram sets (default n=4)
have a Jaccard similarity of at least the threshold (default 0.8). An all-pairs comparison (177k x 8k questions)
would take hours in Python, so candidates come from an inverted index over each eval question's n-gram *prefix*
(prefix filtering: with the n-grams in one global order, rarest first, two sets with Jaccard >= t must share one
of the first ``|x| - ceil(t |x|) + 1`` n-grams of each), which finds every pair above the threshold while scoring
only a few candidates per question.

Near-duplicate images (``near_images``: a figure re-cropped by a few percent, resized, re-encoded as JPEG or turned
grey, as figures travel between data sets) are pairs whose perceptual hashes (imagehash's 64-bit pHash: the signs
of the lowest 8 x 8 frequencies of the image's DCT, on its greyscale 32 x 32 reduction) differ in at most
``image_threshold`` bits (Hamming distance). Candidates come from a multi-index over the eval hashes
(:class:`NearImageIndex`): the 64 bits are cut into 4 bands of 16, and two hashes within distance t agree to
within t // 4 bits on at least one band (pigeonhole), so each train hash looks up only the eval hashes whose band
lies within that radius of its own, and the distance is computed for those candidates alone.

>>> normalize_question("<image 1> What is  shown in the CT-scan?")
'what is shown in the ct scan'
>>> index = NearDuplicateIndex(["what is shown in the ct scan", "which organ is enlarged"], threshold=0.7)
>>> [(i, round(s, 2)) for i, s in index.query("what is shown on the ct scan")]
[(0, 0.72)]
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence

_IMAGE_TAG = re.compile(r"<image\s*\d*>", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)

HASH_BITS = 64
BANDS = 4
MAX_IMAGE_THRESHOLD = 16
"""The largest Hamming threshold accepted: pHashes of unrelated images differ in about 32 of 64 bits (standard
deviation about 4), so beyond 16 unrelated pairs start to pass."""
DEFAULT_IMAGE_THRESHOLD = 10


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


def check_image_threshold(threshold: int) -> int:
    """``threshold`` when it is a Hamming distance the index serves (0..16); else ValueError naming the flag."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= MAX_IMAGE_THRESHOLD:
        raise ValueError(f"--image_threshold {threshold!r} is out of range; fix: an integer number of differing bits "
                         f"of the 64-bit pHash, 0..{MAX_IMAGE_THRESHOLD} (default {DEFAULT_IMAGE_THRESHOLD})")
    return threshold


def _band_probes(width: int, radius: int):
    """Every ``width``-bit mask with at most ``radius`` bits set (the keys within ``radius`` of a band's key)."""
    import itertools

    import numpy as np

    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), k)]
    return np.array(masks, dtype=np.uint64)


class NearImageIndex:
    """Multi-index hashing over 64-bit hashes: :meth:`pairs` returns every (query, indexed) pair within Hamming
    distance ``threshold``, looking at the candidates of :data:`BANDS` band tables only (numpy, no Python loop over
    pairs).

    >>> index = NearImageIndex([0b1011, 1 << 63, 0xFFFF], threshold=2)
    >>> [(int(q), int(i), int(d)) for q, i, d in zip(*index.pairs([0b1000, 0xFFFF0000]))]
    [(0, 0, 2), (0, 1, 2)]
    """

    def __init__(self, hashes: Sequence[int], *, threshold: int = DEFAULT_IMAGE_THRESHOLD) -> None:
        import numpy as np

        self.threshold = check_image_threshold(threshold)
        self.hashes = np.asarray([int(h) for h in hashes], dtype=np.uint64)
        self.width = HASH_BITS // BANDS
        self.radius = threshold // BANDS
        self.probes = _band_probes(self.width, self.radius)
        self.tables = []
        for band in range(BANDS):
            keys = self._band(self.hashes, band)
            order = np.argsort(keys, kind="stable")
            self.tables.append((keys[order], order))

    def _band(self, hashes, band: int):
        import numpy as np

        return (hashes >> np.uint64(band * self.width)) & np.uint64((1 << self.width) - 1)

    def pairs(self, queries: Sequence[int], chunk: int = 1 << 15):
        """``(query positions, indexed positions, distances)``: numpy arrays of every pair within the threshold,
        sorted by query then indexed position."""
        import numpy as np

        queries = np.asarray([int(h) for h in queries], dtype=np.uint64)
        found_q, found_i = [], []
        for start in range(0, len(queries), chunk):
            block = queries[start:start + chunk]
            cand_q, cand_i = [], []
            for band, (keys, order) in enumerate(self.tables):
                own = self._band(block, band)
                for mask in self.probes:
                    wanted = own ^ mask
                    left = np.searchsorted(keys, wanted, side="left")
                    right = np.searchsorted(keys, wanted, side="right")
                    counts = right - left
                    hit = np.nonzero(counts)[0]
                    if not len(hit):
                        continue
                    reps = counts[hit]
                    offsets = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
                    cand_q.append(np.repeat(hit, reps) + start)
                    cand_i.append(order[np.repeat(left[hit], reps) + offsets])
            if not cand_q:
                continue
            q, i = np.concatenate(cand_q), np.concatenate(cand_i)
            distance = np.bitwise_count(queries[q] ^ self.hashes[i])
            keep = distance <= self.threshold
            found_q.append(q[keep])
            found_i.append(i[keep])
        if not found_q:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        pairs = np.unique(np.stack([np.concatenate(found_q), np.concatenate(found_i)]), axis=1)
        q, i = pairs[0], pairs[1]
        return q, i, np.bitwise_count(queries[q] ^ self.hashes[i]).astype(np.int64)


