"""The demo's learnable synthetic task: questions a tiny Qwen2.5-VL can learn on a CPU in minutes.

Image questions ask what is visible in a drawn picture: the colour of the figures or how many there are, or (yes/no
benchmarks) whether they have a named colour. Each picture is 56 x 56 pixels, the size the Qwen2.5-VL processor
keeps as it is: a 2 x 2 grid of 28 x 28 cells, each of which becomes exactly one visual token after the 2 x 2
patch merge. Figures (of a random shape) sit one per cell, so "how many" is the number of non-empty visual tokens
and "which colour" is in every one of them. Text-only questions (the m23k stand-in) state a finding and ask it
back, so the answer follows from the text.

The options of a question kind are always the same list in the same order (the distractors are the rest of the
pool), and the answer is drawn uniformly from it, so the letter alone carries no information but follows from what
was seen: a model has to read the picture (or the text), name what it saw in its reasoning, and give that option's
letter. The reasoning is one short sentence naming the answer, so the SFT target (docs/protocol.md section 9) is a
few dozen tokens and fits the demo's generation budget.

The base model's warm-start corpus (:func:`warmup_examples`, a stand-in for pre-training) is SFT conversations of
two kinds: short picture captions in a plain chat ("Describe the picture." -> "There are 2 figures. The figures
are red."), from which a tiny model learns to see colour and number in a few minutes, and text-only questions in
the paper's prompt and answer format. So the base can describe a picture and can answer a text question in the
format, but has never answered a question about a picture: that is what SFT teaches.

Rows are in the unified schema with the paper's prompt, options and grading (nothing here touches them). The
evaluation rows, the pass-rate/SFT/RL training rows and the warm-start come from separate random streams and
never share a picture: :func:`write_task_data` checks that no evaluation image (by content hash) and no
evaluation text question is among the training rows.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from PIL import Image, ImageDraw

from medvlthinker.data import to_dataset
from medvlthinker.demo.synthetic import EVAL_BENCHMARKS
from medvlthinker.demo.vocabulary import COLOURS, LETTERS, SHAPES, draw_shape, image_to_png_bytes, row

PICTURE_COLOURS = tuple(COLOURS)[:4]
MAX_FIGURES = 4
CELL = 28
SIZE = (2 * CELL, 2 * CELL)
KINDS = ("colour", "count")
CAPTION_REQUEST = "Describe the picture."

# The forms of the text-only questions: (kind, number of options), cycled.
TEXT_FORMS = (("colour", 4), ("count", 4), ("yes_no", 2), ("colour", 5), ("count", 5))


def draw_figures(colour: str, shape: str, cells: list[int], seed: int) -> Image.Image:
    """Figures of one colour and shape in the given cells (0..3, row-major) of a 56 x 56 grey picture."""
    rng = random.Random(seed)
    grey = rng.randint(100, 150)
    img = Image.new("RGB", SIZE, (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    fill = COLOURS[colour]
    for cell in cells:
        x0, y0 = (cell % 2) * CELL, (cell // 2) * CELL
        r = rng.randint(9, 12)
        cx, cy = x0 + CELL // 2 + rng.randint(-1, 1), y0 + CELL // 2 + rng.randint(-1, 1)
        draw_shape(draw, shape, cx, cy, r, fill)
    return img


def _options(correct: str, pool: list[str], n: int) -> tuple[dict[str, str], str]:
    """The first ``n`` entries of ``pool`` in order as options A.., and the letter of ``correct``.

    >>> _options("Blue", ["Red", "Green", "Blue", "Yellow", "Purple"], 5)
    ({'A': 'Red', 'B': 'Green', 'C': 'Blue', 'D': 'Yellow', 'E': 'Purple'}, 'C')
    """
    texts = list(pool[:n])
    return {LETTERS[i]: t for i, t in enumerate(texts)}, LETTERS[texts.index(correct)]


def _picture(rng: random.Random, colour: str | None = None, count: int | None = None) -> dict:
    """A random picture; ``colour`` and ``count`` fix those (the random stream is the same when both are None)."""
    count = rng.randint(1, MAX_FIGURES) if count is None else count
    colour = rng.choice(PICTURE_COLOURS) if colour is None else colour
    return {"colour": colour, "shape": rng.choice(SHAPES), "count": count,
            "cells": sorted(rng.sample(range(4), count)), "seed": rng.randrange(1 << 30)}


class _Rounds:
    """Values drawn in rounds: every value once per round, each round in a new random order.

    >>> r = _Rounds(["Yes", "No"], random.Random(0))
    >>> sorted(r.next() for _ in range(2)), sorted(r.next() for _ in range(2))
    (['No', 'Yes'], ['No', 'Yes'])
    """

    def __init__(self, values, rng: random.Random):
        self.values, self.rng, self.left = list(values), rng, []

    def next(self):
        if not self.left:
            self.left = self.rng.sample(self.values, len(self.values))
        return self.left.pop()


def _colour_sentence(pic: dict, noun: str = "figures") -> str:
    """The sentence that names the colour (``noun`` in the plural; singular for one figure)."""
    if pic["count"] > 1:
        return f"The {noun} are {pic['colour']}."
    return f"The {noun.removesuffix('s')} is {pic['colour']}."


def _count_sentence(pic: dict, noun: str = "figures") -> str:
    """The sentence that names the number."""
    count = pic["count"]
    return f"There are {count} {noun}." if count > 1 else f"There is 1 {noun.removesuffix('s')}."


def caption(pic: dict) -> str:
    """What the warm-start's caption says of a picture: its number of figures, then their colour.

    >>> caption({"colour": "red", "count": 2})
    'There are 2 figures. The figures are red.'
    """
    return f"{_count_sentence(pic)} {_colour_sentence(pic)}"


def _image_question(rng: random.Random, n_options: int, pic: dict, kind: str, multi: bool, truth: str | None = None):
    """(question, options, label, reasoning) about ``pic`` (the first picture when ``multi``); ``truth`` (Yes or
    No) fixes the answer of a yes/no question, which is otherwise a coin flip."""
    where = "the first image" if multi else "the image"
    colour = pic["colour"]
    if n_options == 2:
        if truth is None:
            truth = "Yes" if rng.random() < 0.5 else "No"
        asked = colour if truth == "Yes" else rng.choice([c for c in PICTURE_COLOURS if c != colour])
        options, label = _options(truth, ["Yes", "No"], 2)
        return (f"Are the figures in {where} {asked}?", options, label,
                f"{_colour_sentence(pic)[:-1]}, so the answer is {truth.lower()}.")
    if kind == "colour":
        options, label = _options(colour.capitalize(), [c.capitalize() for c in COLOURS], n_options)
        return f"What colour are the figures in {where}?", options, label, _colour_sentence(pic)
    options, label = _options(str(pic["count"]), [str(i) for i in range(1, 6)], n_options)
    return f"How many figures are drawn in {where}?", options, label, _count_sentence(pic)


def _pictures_to_images(pics: list[dict]) -> list[dict]:
    return [{"bytes": image_to_png_bytes(draw_figures(p["colour"], p["shape"], p["cells"], p["seed"])), "path": None}
            for p in pics]


def make_image_rows(n: int, seed: int, start_index: int = 0, dataset_name: str = "pmc_vqa",
                    n_options: int = 4, n_images: int = 1, share: int = 1, kinds=KINDS,
                    balanced: bool = False) -> list[dict]:
    """``n`` image rows; question kinds cycle through ``kinds``; ``share`` rows ask about one picture set.

    ``balanced`` (the evaluation set) draws the answers in rounds rather than independently: the colour and count
    questions cycle their answer over every colour and number a picture can have, and the yes/no questions over Yes
    and No (with ``share`` 2, one of each on every picture). A model that gives one letter whatever it sees then
    scores exactly the chance rate (1/4 on the option questions of a full round, 1/2 on yes/no), not whatever the
    draw of answers happens to favour.
    """
    rng = random.Random(seed)
    rounds = {"colour": _Rounds(PICTURE_COLOURS, rng), "count": _Rounds(range(1, MAX_FIGURES + 1), rng),
              "yes_no": _Rounds(["Yes", "No"], rng)}
    rows: list[dict] = []
    shared = None
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if shared is None or i % share == 0:
            fixed = {}
            if balanced:  # the asked-about property of the first picture; a yes/no question asks its colour
                asked = "colour" if n_options == 2 else kind
                fixed = {asked: rounds[asked].next()}
            pics = [_picture(rng, **fixed)] + [_picture(rng) for _ in range(n_images - 1)]
            shared = (pics, _pictures_to_images(pics), f"{dataset_name}_img{i // share}")
        pics, images, image_id = shared
        truth = rounds["yes_no"].next() if balanced and n_options == 2 else None
        question, options, label, reasoning = _image_question(rng, n_options, pics[0], kind, n_images > 1, truth)
        rows.append(row(question=question, options=options, label=label, images=list(images),
                         reasoning=reasoning, dataset_name=dataset_name, dataset_index=start_index + i,
                         misc={"image_id": image_id, "kind": "yes_no" if n_options == 2 else kind}))
    return rows


def make_text_rows(n: int, seed: int, start_index: int = 0, dataset_name: str = "m23k") -> list[dict]:
    """``n`` text-only rows (images None): a report states the number and colour of some nodules and the question
    asks one of them back, in the image questions' forms (colour or number with 4 or 5 options, yes/no) and with
    their reasoning sentences, so what a model learns here about options and letters carries over to pictures."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind, n_options = TEXT_FORMS[i % len(TEXT_FORMS)]
        pic = {"colour": rng.choice(PICTURE_COLOURS), "count": rng.randint(1, MAX_FIGURES)}
        many = pic["count"] > 1
        noun = "nodules" if many else "nodule"
        report = f"The scan report notes {pic['count']} {pic['colour']} {noun}."
        if kind == "yes_no":
            asked = pic["colour"] if rng.random() < 0.5 else rng.choice(
                [c for c in PICTURE_COLOURS if c != pic["colour"]])
            truth = "Yes" if asked == pic["colour"] else "No"
            options, label = _options(truth, ["Yes", "No"], 2)
            question = f"{report} {'Are the nodules' if many else 'Is the nodule'} {asked}?"
            reasoning = f"{_colour_sentence(pic, noun)[:-1]}, so the answer is {truth.lower()}."
        elif kind == "colour":
            options, label = _options(pic["colour"].capitalize(), [c.capitalize() for c in COLOURS], n_options)
            question = f"{report} What colour {'are the nodules' if many else 'is the nodule'}?"
            reasoning = _colour_sentence(pic, noun)
        else:
            options, label = _options(str(pic["count"]), [str(k) for k in range(1, 6)], n_options)
            question = f"{report} How many nodules does the report note?"
            reasoning = _count_sentence(pic, noun)
        rows.append(row(question=question, options=options, label=label, images=None, reasoning=reasoning,
                         dataset_name=dataset_name, dataset_index=start_index + i, misc={"kind": f"text_{kind}"}))
    return rows


def make_eval_rows(rows_per_benchmark: int, seed: int) -> list[dict]:
    """The six benchmarks of the evaluation set with their option and image counts (``synthetic.EVAL_BENCHMARKS``),
    their answers balanced (``make_image_rows(balanced=True)``)."""
    rows: list[dict] = []
    for b, (name, (n_options, n_images, share)) in enumerate(EVAL_BENCHMARKS.items()):
        rows += make_image_rows(rows_per_benchmark, seed=seed * 1000 + b, start_index=len(rows), dataset_name=name,
                                n_options=n_options, n_images=n_images, share=share, balanced=True)
    return rows


def make_train_rows(n: int, seed: int, dataset_name: str = "pmc_vqa", start_index: int = 0) -> list[dict]:
    """``n`` training image rows in the evaluation set's forms (4 or 5 options, yes/no, one or two images), so
    that what is learnt carries over to every benchmark; one picture set per row."""
    forms = [(n_options, n_images) for n_options, n_images, _ in EVAL_BENCHMARKS.values()]
    rows: list[dict] = []
    for f, (n_options, n_images) in enumerate(forms):
        count = n // len(forms) + (1 if f < n % len(forms) else 0)
        rows += make_image_rows(count, seed=seed * 10 + f, start_index=start_index + len(rows),
                                dataset_name=dataset_name, n_options=n_options, n_images=n_images)
    order = random.Random(seed).sample(range(len(rows)), len(rows))
    return [rows[i] for i in order]


def _image_hashes(rows: list[dict]) -> set[str]:
    return {hashlib.sha256(img["bytes"]).hexdigest() for r in rows for img in (r["images"] or [])}


def _drop_seen(rows: list[dict], seen_hashes: set[str], seen_questions: set[tuple]) -> list[dict]:
    """Rows whose pictures and (text-only) question-option pair are not among the evaluation rows'."""
    kept = []
    for r in rows:
        if r["images"] and _image_hashes([r]) & seen_hashes:
            continue
        if not r["images"] and (r["question"], r["options"]) in seen_questions:
            continue
        kept.append(r)
    return kept


def caption_examples(n: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """``n`` caption conversations in the SFT data set's form (``converters.sft_format``): a picture, the plain
    request :data:`CAPTION_REQUEST` (not the paper's prompt) and :func:`caption` as the assistant turn. A picture
    whose PNG hash is in ``exclude`` (the evaluation pictures) is drawn again."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < n:
        pic = _picture(rng)
        images = _pictures_to_images([pic])
        if _image_hashes([{"images": images}]) & exclude:
            continue
        i = len(examples)
        examples.append({
            "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                    {"type": "text", "text": CAPTION_REQUEST}]}],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": caption(pic)}]}],
            "images": images,
            "dataset_name": "warmup_caption",
            "dataset_index": i,
        })
    return examples


def warmup_examples(n: int, seed: int, caption_share: float = 0.5, batch_size: int = 16,
                    exclude: frozenset[str] = frozenset()) -> list[dict]:
    """The base model's warm-start corpus: ``n`` SFT conversations, a ``caption_share`` of them picture captions
    and the rest text-only questions in the paper's prompt and answer format.

    The corpus comes in blocks of ``batch_size`` conversations of one kind, the blocks in random order, for a
    trainer that reads it in order (``train_sampling_strategy: sequential`` in configs/sft/demo_warmup.yaml): a
    caption is a third as long as a question, and a batch of one kind pads nothing to the longer one.
    """
    from medvlthinker.converters.sft_format import to_sft_example

    n_captions = round(n * caption_share)
    captions = caption_examples(n_captions, seed=seed, exclude=exclude)
    texts = [to_sft_example(r) for r in make_text_rows(n - n_captions, seed=seed + 1, dataset_name="warmup")]
    blocks = [kind[i:i + batch_size] for kind in (captions, texts) for i in range(0, len(kind), batch_size)]
    random.Random(seed).shuffle(blocks)
    return [example for block in blocks for example in block]


def reliance_rows(eval_rows: list[dict], n_text: int, seed: int) -> list[dict]:
    """The visual-reliance set (docs/experiments.md): the evaluation set's option questions (the benchmarks with more
    than two options; their dataset_index kept) and ``n_text`` text-only questions (``dataset_name`` "text_only",
    indices after the evaluation set's). Under ``--image_mode blank`` or ``shuffled`` a model that reads the picture
    falls to the chance rate on the former (the answers are balanced, :func:`make_image_rows`), while the latter,
    the same prompt in every mode, are the control."""
    options = [r for r in eval_rows if EVAL_BENCHMARKS[r["dataset_name"]][0] > 2]
    start = max(r["dataset_index"] for r in eval_rows) + 1
    return options + make_text_rows(n_text, seed=seed, start_index=start, dataset_name="text_only")


def write_task_data(out_dir, rows_per_benchmark: int = 16, train_rows: int = 96, warmup_rows: int = 1024,
                    seed: int = 0) -> dict[str, str]:
    """The demo's data sets (save_to_disk dirs): ``eval`` (six benchmarks), ``reliance`` (:func:`reliance_rows`),
    ``train_pmc_vqa`` (image rows for
    pass-rate, SFT and RL) and ``train_m23k`` (text-only rows) in the unified schema, and ``warmup`` (the base's
    warm-start corpus, :func:`warmup_examples`, already an SFT data set)."""
    import datasets

    from medvlthinker.converters.sft_format import sft_features, write_sft_dataset
    from medvlthinker.data import save_unified

    out = Path(out_dir)
    eval_rows = make_eval_rows(rows_per_benchmark, seed=seed)
    held_hashes = _image_hashes(eval_rows)
    held_questions = {(r["question"], r["options"]) for r in eval_rows}
    sets = {
        "eval": eval_rows,
        "reliance": reliance_rows(eval_rows, rows_per_benchmark, seed=seed * 1000 + 104),
        "train_pmc_vqa": _drop_seen(make_train_rows(train_rows, seed=seed * 1000 + 101), held_hashes, held_questions),
        "train_m23k": make_text_rows(train_rows, seed=seed * 1000 + 102),
    }
    paths = {}
    for name, rows in sets.items():
        paths[name] = str(out / name)
        save_unified(to_dataset(rows), paths[name])
    warmup = warmup_examples(warmup_rows, seed=seed * 1000 + 103, exclude=frozenset(held_hashes))
    paths["warmup"] = str(out / "warmup")
    write_sft_dataset(datasets.Dataset.from_list(warmup, features=sft_features()), paths["warmup"], overwrite=True)
    return paths


def main(argv=None) -> None:
    """``python -m medvlthinker.demo.demo_task OUT_DIR``: write the demo's learnable synthetic data sets."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--rows_per_benchmark", type=int, default=16)
    ap.add_argument("--train_rows", type=int, default=96)
    ap.add_argument("--warmup_rows", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = write_task_data(args.out_dir, args.rows_per_benchmark, args.train_rows, args.warmup_rows, args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
