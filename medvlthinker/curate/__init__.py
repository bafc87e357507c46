"""Pass-rate curation, its report, and the overlap between a training set and the evaluation set."""
