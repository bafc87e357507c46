"""Deterministic synthetic data in the unified schema, for the demo and the tests.

The questions are answerable from the picture (colour and shape of drawn figures) or, for text-only rows, from the
question itself (small arithmetic), so a model can in principle learn them; each row carries a short reasoning so
the SFT converter has targets. The same seed always gives the same rows, images included (PNG bytes are stable).

The benchmark names and shapes mirror the real evaluation set (:mod:`medvlthinker.benchmarks`): PMC-VQA has 4
options, MedXpertQA-MM 5, the closed PathVQA/SLAKE/VQA-RAD questions are yes/no, MMMU and MedXpertQA have
multi-image rows, and SLAKE/VQA-RAD/PathVQA reuse one image for several questions (``misc.image_id``).
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from medvlthinker.benchmarks import BENCHMARKS
from medvlthinker.demo import vocabulary

# The tests' figures take the first three shapes of the vocabulary.
SHAPES = vocabulary.SHAPES[:3]
COLOURS = vocabulary.COLOURS

# dataset_name -> (number of options, images per row, rows sharing one image), from the registry
EVAL_BENCHMARKS: dict[str, tuple[int, int, int]] = {
    b.dataset_name: (b.num_options, b.images_per_row, b.rows_per_image) for b in BENCHMARKS
}


def draw_image(colour: str, shape: str, size: tuple[int, int], seed: int) -> Image.Image:
    """One figure of the given colour and shape on a noisy grey background."""
    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size, (rng.randint(90, 160),) * 3)
    draw = ImageDraw.Draw(img)
    m = min(w, h)
    r = rng.randint(m // 5, m // 3)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    vocabulary.draw_shape(draw, shape, cx, cy, r, COLOURS[colour])
    return img


def draw_scan(seed: int, size: tuple[int, int] = (320, 256)) -> Image.Image:
    """A stained-slide-like picture, every one of the same modality: a bright elliptical section (its size and place
    vary) on black, smooth structures inside, fine noise and a warm tint. Distinct seeds give distinct pictures
    that still look alike, the hard case for a near-duplicate image check."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w, h = size
    low = Image.fromarray((rng.random((6, 6)) * 255).astype("uint8")).resize(size, Image.BICUBIC)
    mid = Image.fromarray((rng.random((24, 24)) * 255).astype("uint8")).resize(size, Image.BICUBIC)
    mask = Image.new("L", size, 0)
    x0, y0 = rng.uniform(0.04, 0.12) * w, rng.uniform(0.06, 0.14) * h
    ImageDraw.Draw(mask).ellipse((x0, y0, w - rng.uniform(0.04, 0.12) * w, h - rng.uniform(0.06, 0.14) * h), fill=255)
    img = Image.composite(Image.blend(low, mid, 0.35), Image.new("L", size, 0), mask)
    noise = Image.fromarray((rng.normal(0, 12, (h, w)) + 128).clip(0, 255).astype("uint8"))
    grey = Image.blend(img, noise, 0.1)
    return Image.merge("RGB", (grey, grey.point(lambda v: int(v * 0.8)), grey.point(lambda v: int(v * 0.65))))


def _options_with_answer(rng: random.Random, correct: str, pool: list[str], n: int) -> tuple[dict[str, str], str]:
    distractors = rng.sample([p for p in pool if p != correct], n - 1)
    texts = distractors + [correct]
    rng.shuffle(texts)
    options = {vocabulary.LETTERS[i]: t for i, t in enumerate(texts)}
    label = vocabulary.LETTERS[texts.index(correct)]
    return options, label


def _image_question(rng: random.Random, n_options: int, figures: list[tuple[str, str]]):
    """A question about the first figure; the options are colours, shapes, or yes/no."""
    colour, shape = figures[0]
    if n_options == 2:
        asked = rng.choice(list(COLOURS))
        question = f"Is the {shape} in the image {asked}?"
        options = {"A": "Yes", "B": "No"} if rng.random() < 0.5 else {"A": "No", "B": "Yes"}
        truth = "Yes" if asked == colour else "No"
        label = next(k for k, v in options.items() if v == truth)
        reasoning = f"The image shows a {colour} {shape}, so the answer is {truth.lower()}."
        return question, options, label, reasoning
    if rng.random() < 0.5:
        which = "first image" if len(figures) > 1 else "image"
        question = f"What colour is the {shape} in the {which}?"
        options, label = _options_with_answer(rng, colour.capitalize(), [c.capitalize() for c in COLOURS], n_options)
        reasoning = f"The {shape} is filled with {colour}."
    else:
        which = "first image" if len(figures) > 1 else "image"
        question = f"Which shape is drawn in the {which}?"
        pool = [s.capitalize() for s in SHAPES] + ["Hexagon", "Star"]
        options, label = _options_with_answer(rng, shape.capitalize(), pool, n_options)
        reasoning = f"The figure has the outline of a {shape}."
    return question, options, label, reasoning


def make_eval_rows(rows_per_benchmark: int = 4, seed: int = 0, image_size: tuple[int, int] = (64, 64)) -> list[dict]:
    """Rows for the six benchmarks of the evaluation set, ``dataset_index`` 0..N-1 in benchmark order."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for name, (n_options, n_images, share) in EVAL_BENCHMARKS.items():
        shared: list | None = None
        for i in range(rows_per_benchmark):
            if shared is None or i % share == 0:
                figures = [(rng.choice(list(COLOURS)), rng.choice(SHAPES)) for _ in range(n_images)]
                images = [draw_image(c, s, image_size, rng.randrange(1 << 30)) for c, s in figures]
                shared = [figures, images, f"{name}_img{i // share}"]
            figures, images, image_id = shared
            question, options, label, reasoning = _image_question(rng, n_options, figures)
            rows.append(
                vocabulary.row(
                    question=question, options=options, label=label, images=list(images), reasoning=reasoning,
                    dataset_name=name, dataset_index=len(rows), misc={"image_id": image_id},
                )
            )
    return rows


def make_text_rows(n: int = 16, seed: int = 0, start_index: int = 0, dataset_name: str = "m23k") -> list[dict]:
    """Text-only multiple-choice rows with reasoning, shaped like m23k (images None, 4 options)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        dose = a + b
        question = (
            f"A patient receives {a} mg of a drug in the morning and {b} mg in the evening. "
            "What is the total daily dose?"
        )
        pool = [f"{v} mg" for v in range(max(1, dose - 6), dose + 7)]
        options, label = _options_with_answer(rng, f"{dose} mg", pool, 4)
        reasoning = f"The daily dose is the sum of both doses: {a} + {b} = {dose} mg."
        rows.append(
            vocabulary.row(
                question=question, options=options, label=label, images=None, reasoning=reasoning,
                dataset_name=dataset_name, dataset_index=start_index + i,
            )
        )
    return rows


def make_image_rows(
    n: int = 16, seed: int = 0, start_index: int = 0, dataset_name: str = "pmc_vqa", image_size=(64, 64)
) -> list[dict]:
    """Single-image 4-option rows with reasoning, shaped like the PMC-VQA training set."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        figures = [(rng.choice(list(COLOURS)), rng.choice(SHAPES))]
        images = [draw_image(figures[0][0], figures[0][1], image_size, rng.randrange(1 << 30))]
        question, options, label, reasoning = _image_question(rng, 4, figures)
        rows.append(
            vocabulary.row(
                question=question, options=options, label=label, images=images, reasoning=reasoning,
                dataset_name=dataset_name, dataset_index=start_index + i,
            )
        )
    return rows


def write_demo_data(out_dir, rows_per_benchmark: int = 8, train_rows: int = 24, seed: int = 0) -> dict[str, str]:
    """The bundled default data: an evaluation set over the six benchmarks and two training sets (image, text)."""
    from pathlib import Path

    from medvlthinker.data import save_unified, to_dataset

    out = Path(out_dir)
    paths = {
        "eval": out / "eval",
        "train_pmc_vqa": out / "train_pmc_vqa",
        "train_m23k": out / "train_m23k",
    }
    save_unified(to_dataset(make_eval_rows(rows_per_benchmark, seed=seed)), str(paths["eval"]))
    save_unified(to_dataset(make_image_rows(train_rows, seed=seed + 1)), str(paths["train_pmc_vqa"]))
    save_unified(to_dataset(make_text_rows(train_rows, seed=seed + 2)), str(paths["train_m23k"]))
    return {k: str(v) for k, v in paths.items()}


def main(argv=None) -> None:
    """``python -m medvlthinker.demo.synthetic OUT_DIR``: write the bundled synthetic data sets (save_to_disk dirs)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--rows_per_benchmark", type=int, default=8)
    ap.add_argument("--train_rows", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name, path in write_demo_data(args.out_dir, args.rows_per_benchmark, args.train_rows, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
