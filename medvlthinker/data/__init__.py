"""Loading any data set in the unified schema (docs/protocol.md section 1), from the Hub or a local path.

>>> from medvlthinker.data import load_unified  # doctest: +SKIP
>>> ds = load_unified("UCSC-VLAA/MedVLThinker-Eval", "test", subset=["slake_closed"])  # doctest: +SKIP
"""

from medvlthinker.data.loading import (
    check_dataset_images,
    load_unified,
    save_unified,
    to_dataset,
    unified_features,
    validate_dataset,
)
from medvlthinker.data.sources import disk_view, load_disk_dataset, load_table, source_kind

__all__ = [
    "disk_view",
    "load_disk_dataset",
    "load_table",
    "check_dataset_images",
    "load_unified",
    "save_unified",
    "source_kind",
    "to_dataset",
    "unified_features",
    "validate_dataset",
]
