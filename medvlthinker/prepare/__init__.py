"""Raw training sources -> unified rows (docs/protocol.md sections 1 and 7), one module per job:

* :mod:`.report`: the malformed-row error, the fatal error and the :class:`PrepareReport` of a run;
* :mod:`.pmc_vqa`: PMC-VQA's row rules (``compat="original"``, the original's rows and dataset_index, or the
  ``"lenient"`` opt-in, :data:`COMPAT`) and its CSV;
* :mod:`.pmc_run`: a whole PMC-VQA CSV and figure folder, in resumable chunks (:func:`prepare_pmc_vqa`);
* :mod:`.m23k`: m23k-style text MCQ with reasoning (:func:`prepare_m23k`).

A malformed source row is never dropped silently: it is counted by reason with examples in a
:class:`PrepareReport`, and either skipped (``on_error="skip"``) or fatal (``on_error="fail"``).
"""

from medvlthinker.prepare.m23k import M23K_ANSWER_COLUMNS, M23K_LABEL_COLUMNS, m23k_row, prepare_m23k
from medvlthinker.prepare.pmc_run import prepare_pmc_vqa
from medvlthinker.prepare.pmc_vqa import (
    COMPAT,
    ORIGINAL_STRIP,
    PMC_COLUMNS,
    lenient_pmc_vqa_fields,
    original_indices,
    original_pmc_vqa_fields,
    pmc_vqa_row,
    read_pmc_vqa_csv,
    strip_choice_prefix,
)
from medvlthinker.prepare.report import ON_ERROR, MalformedRow, PrepareError, PrepareReport, check_rows_written

__all__ = [
    "COMPAT",
    "M23K_ANSWER_COLUMNS",
    "M23K_LABEL_COLUMNS",
    "ON_ERROR",
    "ORIGINAL_STRIP",
    "PMC_COLUMNS",
    "MalformedRow",
    "PrepareError",
    "PrepareReport",
    "check_rows_written",
    "lenient_pmc_vqa_fields",
    "m23k_row",
    "original_indices",
    "original_pmc_vqa_fields",
    "pmc_vqa_row",
    "prepare_m23k",
    "prepare_pmc_vqa",
    "read_pmc_vqa_csv",
    "strip_choice_prefix",
]
