"""The six benchmarks of the evaluation set (docs/protocol.md sections 5 and 11): one registry for every stage.

Each entry holds what the paper and its evaluation set fix about a benchmark: the ``dataset_name`` its rows carry,
the column ``label`` of the paper table, its ``rows`` in ``UCSC-VLAA/MedVLThinker-Eval``, the 95% ``half_width``
(points) of one accuracy measured at that size, and the shape the synthetic stand-in mirrors (options per
question, images per row, rows sharing one picture). Eval, the synthetic data and the analysis import it from
here; nothing else spells these numbers.

>>> [b.label for b in BENCHMARKS]
['PMC', 'MMMU', 'MedX-M', 'PathVQA', 'SLAKE', 'VQA-Rad']
>>> EVAL_SET_ROWS
8220
>>> BY_NAME["MedXpertQA-MM"].num_options, BY_LABEL["SLAKE"].rows
(5, 416)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the evaluation set; see the module docstring for the fields."""

    dataset_name: str
    label: str
    rows: int
    half_width: float
    num_options: int
    images_per_row: int
    rows_per_image: int


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("pmc_vqa", "PMC", rows=2000, half_width=2.2, num_options=4, images_per_row=1, rows_per_image=1),
    Benchmark("MMMU-medical", "MMMU", rows=170, half_width=7.5, num_options=4, images_per_row=2, rows_per_image=1),
    Benchmark("MedXpertQA-MM", "MedX-M", rows=2000, half_width=1.8, num_options=5, images_per_row=2,
              rows_per_image=1),
    Benchmark("pathvqa_closed", "PathVQA", rows=3362, half_width=1.6, num_options=2, images_per_row=1,
              rows_per_image=2),
    Benchmark("slake_closed", "SLAKE", rows=416, half_width=4.6, num_options=2, images_per_row=1, rows_per_image=2),
    Benchmark("vqa_rad_closed", "VQA-Rad", rows=272, half_width=5.7, num_options=2, images_per_row=1,
              rows_per_image=2),
)
"""In the paper's column order. Synthetic shapes: MMMU and MedXpertQA have multi-image rows; the closed
PathVQA/SLAKE/VQA-RAD questions are yes/no and reuse one image for several questions (``misc.image_id``)."""

AVG = "Avg."
"""The paper's last column: the unweighted mean of the six benchmark accuracies."""

AVERAGE_HALF_WIDTH = 1.8
"""95% half-width in points of Avg. over the whole evaluation set (docs/protocol.md section 11)."""

COLUMNS: tuple[str, ...] = tuple(b.label for b in BENCHMARKS) + (AVG,)
"""The paper table's columns, in order."""

EVAL_SET_ROWS = sum(b.rows for b in BENCHMARKS)
"""Rows of ``UCSC-VLAA/MedVLThinker-Eval`` (dataset_index 0..8219)."""

BY_NAME = {b.dataset_name: b for b in BENCHMARKS}
BY_LABEL = {b.label: b for b in BENCHMARKS}

ROW_ORDER: tuple[Benchmark, ...] = tuple(BY_LABEL[label] for label in ("PMC", "PathVQA", "SLAKE", "VQA-Rad", "MMMU",
                                                                       "MedX-M"))
"""The benchmarks in the evaluation set's row order (dataset_index 0..8219), which is not the paper's column order:
PMC-VQA, the three closed sets, MMMU, MedXpertQA (docs/eval_set.md). The builder writes them in this order."""
