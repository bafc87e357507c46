#!/usr/bin/env bash
# Whether this node can run the recipe, in about ten minutes, offline: the eval runner against raw vLLM, pass-rate
# mode, two GRPO steps of the paper's 3B config, ten SFT steps, the merge of the GRPO checkpoint; one JSON document
# of figures and versions (docs/performance.md).
#
#   bash scripts/cluster_check.sh                      # on a GPU node: the 3B architecture with random weights
#   bash scripts/cluster_check.sh --profile cpu        # the same parts on the tiny model, on a CPU (the tests)
#   bash scripts/cluster_check.sh --skip grpo,merge --out outputs/cluster_check
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# this checkout's package first, in this process and every one it starts (parts, verl's Ray workers)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m medvlthinker.cluster.cluster_check "$@"
