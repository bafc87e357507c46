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

from medvlthinker import synthetic
from medvlthinker.overlap import NearDuplicateIndex, char_ngrams, find_overlap, jaccard, normalize_question

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
    train, eval_ = synthetic.to_dataset(TRAIN), synthetic.to_dataset(EVAL)
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
        "exact_question": 0, "near_question": 1, "identical_image": 1, "question_and_image": 1}
    assert report.eval_rows_matched["MMMU-medical"]["exact_question"] == 1
    assert report.train_rows_matched == {
        "exact_question": 2, "near_question": 1, "identical_image": 2, "question_and_image": 1}
    # a stricter threshold drops the near-duplicate; without images only the question matches remain
    strict = find_overlap(train, eval_, threshold=0.9, compare_images=False)
    assert {(m["train_dataset_index"], m["eval_dataset_index"]) for m in strict.matches} == {(100, 0), (104, 3)}


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
    assert digests[0] == digests[1] and set(digests[0]) == {"overlap_report.json", "overlap_matches.jsonl", "overlap_table.txt"}
    table = (tmp_path / "a" / "overlap_table.txt").read_text()
    assert table.splitlines()[0].split() == ["benchmark", "exact_question", "near_question", "identical_image", "question_and_image"]
    assert table.splitlines()[-1].split() == ["train", "rows", "2", "1", "2", "1"]
