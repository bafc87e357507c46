"""Train/eval overlap: normalised exact questions, near-duplicates through the prefix index, identical images."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from medvlthinker.curate.near_duplicates import (
    NearDuplicateIndex,
    NearImageIndex,
    char_ngrams,
    jaccard,
    normalize_question,
)
from medvlthinker.curate.overlap import find_overlap, without_flagged
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic

ROOT = Path(__file__).resolve().parents[1]


def _image(colour, shape, seed):
    return synthetic.draw_image(colour, shape, (48, 40), seed)


def _row(question, images, name, index, options=None):
    options = options or {"A": "Yes", "B": "No"}
    return {
        "images": images, "question": question, "options": json.dumps(options), "answer_label": "A",
        "answer": options["A"], "reasoning": None, "dataset_name": name, "dataset_index": index, "hash": None,
        "misc": "{}",
    }


def _bmp(img):
    buf = io.BytesIO()
    img.save(buf, format="BMP")
    return {"bytes": buf.getvalue(), "path": None}


IMAGES = [_image("red", "circle", 1), _image("blue", "square", 2), _image("green", "triangle", 3),
          _image("yellow", "circle", 4), _image("purple", "square", 5), _image("red", "triangle", 6)]

EVAL = [
    _row("What abnormality is seen in the left lower lobe of the lung?", [IMAGES[0]], "pmc_vqa", 0),
    _row("Which imaging modality was used to acquire this picture?", [IMAGES[1]], "slake_closed", 1),
    _row("Is there evidence of a fracture in the distal radius?", [IMAGES[2]], "vqa_rad_closed", 2),
    _row("<image 1> How many lesions are visible on the contrast-enhanced scan?", [IMAGES[3]], "MMMU-medical", 3,
         {"A": "One", "B": "Two", "C": "Three"}),
]
TRAIN = [
    _row("what abnormality is seen in the LEFT lower lobe of the lung", [IMAGES[4]], "pmc_vqa", 100),  # exact
    _row("Which imaging modality was used to acquire this image?", [_bmp(IMAGES[1])], "pmc_vqa", 101),  # near + image
    _row("What is the total daily dose of the drug?", [IMAGES[2]], "pmc_vqa", 102),  # same image only
    _row("Which organ is enlarged?", [IMAGES[5]], "pmc_vqa", 103),  # nothing
    _row("How many lesions are visible on the contrast enhanced scan", None, "m23k", 104,
         {"A": "Three", "B": "One", "C": "Two"}),  # exact, text-only, same options in another order
]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    train, eval_ = to_dataset(TRAIN), to_dataset(EVAL)
    train.save_to_disk(str(root / "train"))
    eval_.save_to_disk(str(root / "eval"))
    return root, train, eval_


def test_normalize_question():
    assert normalize_question("<image 2> Is the  LESION\u00a0benign?") == "is the lesion benign"
    assert normalize_question("X-ray: left/right?") == "x ray left right"
    assert normalize_question(None) == ""


def test_prefix_index_finds_exactly_the_pairs_of_a_full_comparison():
    rng = random.Random(0)
    words = "the a ct mri lesion left right lung liver which what is of in most likely diagnosis shown".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 10))) for _ in range(150)]
    queries = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 10))) for _ in range(150)]
    queries += [t.replace("the", "a", 1) for t in texts[:40]]
    sets_ = [char_ngrams(t) for t in texts]
    for threshold in (0.6, 0.8, 0.95):
        index = NearDuplicateIndex(texts, threshold=threshold)
        fast = {(q, i) for q, text in enumerate(queries) for i, _ in index.query(text)}
        brute = {(q, i) for q, text in enumerate(queries) for i, s in enumerate(sets_) if jaccard(char_ngrams(text), s) >= threshold}
        assert fast == brute and len(brute) > 10
    with pytest.raises(ValueError):
        NearDuplicateIndex(texts, threshold=0.0)


def test_find_overlap_kinds_and_counts(sets):
    _, train, eval_ = sets
    report = find_overlap(train, eval_, threshold=0.8)
    pairs = {(m["train_dataset_index"], m["eval_dataset_index"]): m for m in report.matches}
    assert set(pairs) == {(100, 0), (101, 1), (102, 2), (104, 3)}
    assert pairs[(100, 0)]["kinds"] == ["exact_question"] and pairs[(100, 0)]["question_similarity"] == 1.0
    assert pairs[(101, 1)]["kinds"] == ["near_question", "identical_image", "question_and_image"]  # BMP vs PNG
    assert 0.8 <= pairs[(101, 1)]["question_similarity"] < 1.0
    assert pairs[(102, 2)]["kinds"] == ["identical_image"]
    assert pairs[(104, 3)]["kinds"] == ["exact_question"] and pairs[(104, 3)]["same_options"] is True
    assert report.eval_rows_matched["slake_closed"] == {
        "exact_question": 0, "near_question": 1, "identical_image": 1, "near_image": 0, "question_and_image": 1}
    assert report.eval_rows_matched["MMMU-medical"]["exact_question"] == 1
    assert report.train_rows_matched == {
        "exact_question": 2, "near_question": 1, "identical_image": 2, "near_image": 0, "question_and_image": 1}
    # a stricter threshold drops the near-duplicate; without images only the question matches remain
    strict = find_overlap(train, eval_, threshold=0.9, compare_images=False)
    assert {(m["train_dataset_index"], m["eval_dataset_index"]) for m in strict.matches} == {(100, 0), (104, 3)}


def test_rows_whose_images_cannot_be_decoded_are_counted_named_and_warned(tmp_path):
    junk = {"bytes": b"\x89PNG\r\n\x1a\n cut short", "path": None}
    train = to_dataset(TRAIN[:2] + [_row("Which organ is enlarged?", [junk], "pmc_vqa", 107)])
    eval_ = to_dataset(EVAL[:1] + [_row("Is it a fracture?", [junk], "slake_closed", 9)])
    for side, ds in (("train", train), ("eval", eval_)):
        ds.save_to_disk(str(tmp_path / side))
    with pytest.warns(UserWarning, match=r"images of \{'train': 1, 'eval': 1\} rows cannot be decoded.*\(first: "
                                         r"train dataset_name=pmc_vqa, dataset_index=107, eval dataset_name="
                                         r"slake_closed, dataset_index=9\)"):
        report = find_overlap(train, eval_)
    assert report.undecodable_image_rows == {"train": 1, "eval": 1}
    spec = importlib.util.spec_from_file_location("check_overlap", ROOT / "data_process" / "check_overlap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.warns(UserWarning, match="cannot be decoded"):
        result = CliRunner().invoke(module.main, ["--train", str(tmp_path / "train"), "--eval", str(tmp_path / "eval"),
                                                  "--output_dir", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out" / "overlap_report.json").read_text())
    assert written["images_compared"] is True and written["undecodable_image_rows"] == {"train": 1, "eval": 1}
    assert {"side": "eval", "dataset_name": "slake_closed", "dataset_index": 9} in written["undecodable_examples"]


def test_check_overlap_script_is_deterministic(sets, tmp_path):
    root, _, _ = sets
    spec = importlib.util.spec_from_file_location("check_overlap", ROOT / "data_process" / "check_overlap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    digests = []
    for run in ("a", "b"):
        result = CliRunner().invoke(
            module.main,
            ["--train", str(root / "train"), "--eval", str(root / "eval"), "--output_dir", str(tmp_path / run)],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert "4 matching pairs" in result.output
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((tmp_path / run).iterdir())})
    assert digests[0] == digests[1] and set(digests[0]) == {"overlap_report.json", "overlap_matches.jsonl", "overlap_table.txt",
                                                           "overlap_examples.json"}
    table = (tmp_path / "a" / "overlap_table.txt").read_text()
    assert table.splitlines()[0].split() == ["benchmark", "exact_question", "near_question", "identical_image", "near_image",
                                         "question_and_image"]
    assert table.splitlines()[-1].split() == ["train", "rows", "2", "1", "2", "0", "1"]


# ---------------------------------------------------------------------------------------------- near-duplicate images
def _jpeg(img, quality=40):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return {"bytes": buf.getvalue(), "path": None}


def _crop(img, share):
    w, h = img.size
    dx, dy = round(w * share), round(h * share)
    return img.crop((dx, dy, w - dx, h - dy))


SCANS = [synthetic.draw_scan(seed) for seed in range(6)]
PLANTED = {  # eval position -> the training copy, as figures travel between data sets
    0: _crop(SCANS[0], 0.03),                                          # 3% off every side
    1: SCANS[1].resize((160, 128)),                                    # half the size
    2: _jpeg(SCANS[2], quality=40),                                    # re-encoded as JPEG
    3: SCANS[3].convert("L"),                                          # turned grey
    4: _jpeg(_crop(SCANS[4], 0.02).resize((240, 192)).convert("L").convert("RGB"), quality=60),  # all at once
}


@pytest.fixture(scope="module")
def scan_sets():
    eval_rows = [_row(f"Eval question {k} about the scan?", [SCANS[k]], "pmc_vqa" if k % 2 else "slake_closed", k)
                 for k in range(6)]
    train_rows = [_row(f"Train question {k}?", [img], "pmc_vqa", 100 + k) for k, img in PLANTED.items()]
    # distinct scans of the same modality, none a copy of an eval scan
    train_rows += [_row(f"Other question {k}?", [synthetic.draw_scan(1000 + k)], "pmc_vqa", 200 + k) for k in range(40)]
    return to_dataset(train_rows), to_dataset(eval_rows)


def test_every_planted_near_duplicate_image_is_found_and_no_distinct_one(scan_sets):
    train, eval_ = scan_sets
    report = find_overlap(train, eval_, near_images=True)
    found = {(m["train_dataset_index"], m["eval_dataset_index"]): m for m in report.matches}
    assert set(found) == {(100 + k, k) for k in PLANTED}
    for match in found.values():
        assert match["kinds"] == ["near_image"] and 0 <= match["image_distance"] <= 10, match
    assert report.eval_rows_matched["slake_closed"]["near_image"] == 3
    assert report.eval_rows_matched["pmc_vqa"]["near_image"] == 2
    assert report.train_rows_matched["near_image"] == 5 and report.image_threshold == 10
    examples = report.examples(per_kind=1)
    assert examples["slake_closed"]["near_image"][0]["eval_dataset_index"] == 0
    assert "slake_closed near_image: eval 0 ~ train pmc_vqa 100 (pHash distance" in report.examples_text()
    # without the perceptual hashes none of them is found: no pixel is the same
    assert not find_overlap(train, eval_).matches
    # the training set without the flagged rows keeps every distinct scan
    kept = without_flagged(train, report)
    assert sorted(kept["dataset_index"]) == list(range(200, 240))


def test_image_index_finds_exactly_the_pairs_of_a_full_comparison():
    rng = random.Random(1)
    indexed = [rng.getrandbits(64) for _ in range(300)]
    queries = [rng.getrandbits(64) for _ in range(200)]
    for h in indexed[:60]:  # copies with a few bits flipped, up to well past the threshold
        flips = rng.sample(range(64), rng.randint(0, 14))
        queries.append(h ^ sum(1 << b for b in flips))
    for threshold in (0, 3, 10, 16):
        q, i, d = NearImageIndex(indexed, threshold=threshold).pairs(queries)
        fast = {(int(a), int(b), int(c)) for a, b, c in zip(q, i, d)}
        brute = {(a, b, bin(x ^ y).count("1")) for a, x in enumerate(queries) for b, y in enumerate(indexed)
                 if bin(x ^ y).count("1") <= threshold}
        assert fast == brute and len(brute) >= 5
    with pytest.raises(ValueError, match=r"--image_threshold 17 is out of range; fix: .* 0\.\.16"):
        NearImageIndex(indexed, threshold=17)


def test_write_train_without_the_flagged_rows_and_a_bad_threshold(scan_sets, tmp_path):
    train, eval_ = scan_sets
    train.save_to_disk(str(tmp_path / "train"))
    eval_.save_to_disk(str(tmp_path / "eval"))
    spec = importlib.util.spec_from_file_location("check_overlap", ROOT / "data_process" / "check_overlap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--train", str(tmp_path / "train"), "--eval", str(tmp_path / "eval"), "--output_dir", str(tmp_path / "o")]
    result = CliRunner().invoke(module.main, [*args, "--write_train_without", str(tmp_path / "clean")])
    assert result.exit_code == 0, result.output
    assert "wrote 40 of 45 training rows (without the 5 flagged)" in result.output
    import datasets

    assert sorted(datasets.load_from_disk(str(tmp_path / "clean"))["dataset_index"]) == list(range(200, 240))
    bad = CliRunner().invoke(module.main, [*args, "--image_threshold", "40"])
    assert bad.exit_code == 1 and "error: --image_threshold 40 is out of range; fix:" in bad.output
    assert not (tmp_path / "o" / "overlap_report.json").exists() or result.exit_code == 0
