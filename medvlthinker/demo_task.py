"""The demo's learnable synthetic task: questions a tiny Qwen2.5-VL can learn on a CPU in minutes.

Image questions ask what is visible in a drawn picture: the colour of the figures, how many there are, which shape
they have, or (yes/no benchmarks) whether they have a named colour. Each picture is 56 x 56 pixels, the size the
Qwen2.5-VL processor keeps as it is: a 2 x 2 grid of 28 x 28 cells, each of which becomes exactly one visual token
after the 2 x 2 patch merge. Figures sit one per cell, so "how many" is the number of non-empty visual tokens and
"which colour" is in every one of them; shapes differ only inside a token, which makes them the hard questions.
Text-only questions (the m23k stand-in) state a finding and ask it back, so the answer follows from the text.

The distractor options are drawn from the same pool as the answer and shuffled, so the option letter carries no
information: a model has to read the picture (or the text), name what it saw in its reasoning, and pick the
letter of the matching option. The reasoning is one short sentence naming the answer, so the SFT target
(docs/protocol.md section 9) is a few dozen tokens and fits the demo's generation budget.

Rows are in the unified schema with the paper's prompt, options and grading (nothing here touches them). The
evaluation rows, the pass-rate/SFT/RL training rows and the format warm-start rows come from separate random
streams and never share a picture: :func:`write_task_data` checks that no evaluation image (by content hash) and
no evaluation text question is among the training rows.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from PIL import Image, ImageDraw

from medvlthinker.synthetic import EVAL_BENCHMARKS, LETTERS, _row, image_to_png_bytes, to_dataset

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 60, 230),
    "yellow": (235, 215, 30),
    "purple": (150, 40, 180),
    "orange": (245, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
CELL = 28
SIZE = (2 * CELL, 2 * CELL)
NUMBER_WORDS = ("one", "two", "three", "four")
KINDS = ("colour", "count", "shape")

# Text-only findings: (what is described, the attribute asked, the pool the options come from).
TEXT_FINDINGS = (
    ("lesion", "colour", [c.capitalize() for c in COLOURS]),
    ("nodules", "number", ["1", "2", "3", "4", "5"]),
    ("mass", "shape", ["Round", "Oval", "Irregular", "Lobulated", "Spiculated"]),
)


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
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:
            w = r // 3
            draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
            draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    return img


def _options(rng: random.Random, correct: str, pool: list[str], n: int) -> tuple[dict[str, str], str]:
    texts = rng.sample([p for p in pool if p != correct], n - 1) + [correct]
    rng.shuffle(texts)
    return {LETTERS[i]: t for i, t in enumerate(texts)}, LETTERS[texts.index(correct)]


def _picture(rng: random.Random) -> dict:
    count = rng.randint(1, 4)
    return {"colour": rng.choice(list(COLOURS)), "shape": rng.choice(SHAPES), "count": count,
            "cells": sorted(rng.sample(range(4), count)), "seed": rng.randrange(1 << 30)}


def _image_question(rng: random.Random, n_options: int, pic: dict, kind: str, multi: bool):
    """(question, options, label, reasoning) about ``pic`` (the first picture when ``multi``)."""
    where = "the first image" if multi else "the image"
    colour, shape, count = pic["colour"], pic["shape"], pic["count"]
    plural = "s" if count > 1 else ""
    if n_options == 2:
        asked = colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != colour])
        options = {"A": "Yes", "B": "No"} if rng.random() < 0.5 else {"A": "No", "B": "Yes"}
        truth = "Yes" if asked == colour else "No"
        label = next(k for k, v in options.items() if v == truth)
        return (f"Are the figures in {where} {asked}?", options, label,
                f"The figures are {colour}, so the answer is {truth.lower()}.")
    if kind == "colour":
        options, label = _options(rng, colour.capitalize(), [c.capitalize() for c in COLOURS], n_options)
        return f"What colour are the figures in {where}?", options, label, f"The figures are {colour}."
    if kind == "count":
        pool = [str(i) for i in range(1, 6)]
        options, label = _options(rng, str(count), pool, n_options)
        return (f"How many figures are drawn in {where}?", options, label,
                f"There {'are' if count > 1 else 'is'} {count} figure{plural}.")
    options, label = _options(rng, shape.capitalize(), [s.capitalize() for s in SHAPES] + ["Star"], n_options)
    return f"Which shape are the figures in {where}?", options, label, f"The figures are {shape}s."


def _pictures_to_images(pics: list[dict]) -> list[dict]:
    return [{"bytes": image_to_png_bytes(draw_figures(p["colour"], p["shape"], p["cells"], p["seed"])), "path": None}
            for p in pics]


def make_image_rows(n: int, seed: int, start_index: int = 0, dataset_name: str = "pmc_vqa",
                    n_options: int = 4, n_images: int = 1, share: int = 1, kinds=KINDS) -> list[dict]:
    """``n`` image rows; question kinds cycle through ``kinds``; ``share`` rows ask about one picture set."""
    rng = random.Random(seed)
    rows: list[dict] = []
    shared = None
    for i in range(n):
        if shared is None or i % share == 0:
            pics = [_picture(rng) for _ in range(n_images)]
            shared = (pics, _pictures_to_images(pics), f"{dataset_name}_img{i // share}")
        pics, images, image_id = shared
        kind = kinds[i % len(kinds)]
        question, options, label, reasoning = _image_question(rng, n_options, pics[0], kind, n_images > 1)
        rows.append(_row(question=question, options=options, label=label, images=list(images),
                         reasoning=reasoning, dataset_name=dataset_name, dataset_index=start_index + i,
                         misc={"image_id": image_id, "kind": "yes_no" if n_options == 2 else kind}))
    return rows


def make_text_rows(n: int, seed: int, start_index: int = 0, dataset_name: str = "m23k") -> list[dict]:
    """``n`` text-only 4-option rows (images None) whose answer is stated in the question."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        finding, attribute, pool = TEXT_FINDINGS[i % len(TEXT_FINDINGS)]
        value = rng.choice(pool)
        if attribute == "number":
            question = f"The scan report notes {value} {finding}. How many {finding} does the report note?"
            reasoning = f"The report notes {value} {finding}."
        else:
            question = (f"The scan report describes the {finding} as {value.lower()}. "
                        f"What {attribute} is the {finding}?")
            reasoning = f"The report says the {finding} is {value.lower()}."
        options, label = _options(rng, value, pool, 4)
        rows.append(_row(question=question, options=options, label=label, images=None, reasoning=reasoning,
                         dataset_name=dataset_name, dataset_index=start_index + i,
                         misc={"kind": f"text_{attribute}"}))
    return rows


def make_eval_rows(rows_per_benchmark: int, seed: int) -> list[dict]:
    """The six benchmarks of the evaluation set with their option and image counts (``synthetic.EVAL_BENCHMARKS``)."""
    rows: list[dict] = []
    for b, (name, (n_options, n_images, share)) in enumerate(EVAL_BENCHMARKS.items()):
        rows += make_image_rows(rows_per_benchmark, seed=seed * 1000 + b, start_index=len(rows), dataset_name=name,
                                n_options=n_options, n_images=n_images, share=share)
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


def write_task_data(out_dir, rows_per_benchmark: int = 16, train_rows: int = 96, warmup_rows: int = 64,
                    seed: int = 0) -> dict[str, str]:
    """The demo's data sets (save_to_disk dirs): ``eval`` (six benchmarks), ``train_pmc_vqa`` (image rows for
    pass-rate, SFT and RL), ``train_m23k`` (text-only rows) and ``warmup`` (the text-only rows of the format
    warm-start, a stream of their own)."""
    from medvlthinker.data import save_unified

    out = Path(out_dir)
    eval_rows = make_eval_rows(rows_per_benchmark, seed=seed)
    held_hashes = _image_hashes(eval_rows)
    held_questions = {(r["question"], r["options"]) for r in eval_rows}
    sets = {
        "eval": eval_rows,
        "train_pmc_vqa": _drop_seen(make_train_rows(train_rows, seed=seed * 1000 + 101), held_hashes, held_questions),
        "train_m23k": make_text_rows(train_rows, seed=seed * 1000 + 102),
        "warmup": make_text_rows(warmup_rows, seed=seed * 1000 + 103, dataset_name="warmup"),
    }
    paths = {}
    for name, rows in sets.items():
        paths[name] = str(out / name)
        save_unified(to_dataset(rows), paths[name])
    return paths


def main(argv=None) -> None:
    """``python -m medvlthinker.demo_task OUT_DIR``: write the demo's learnable synthetic data sets."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--rows_per_benchmark", type=int, default=16)
    ap.add_argument("--train_rows", type=int, default=96)
    ap.add_argument("--warmup_rows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = write_task_data(args.out_dir, args.rows_per_benchmark, args.train_rows, args.warmup_rows, args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
