#!/usr/bin/env bash
# Every wheel of the `gpu` extra for an offline (air-gapped) node, in one folder, downloaded on a machine with
# network (docs/install.md, "A node without network"):
#
#   bash scripts/make_wheelhouse.sh wheelhouse --python_version 3.12     # several GB: torch and the CUDA libraries
#   bash scripts/make_wheelhouse.sh wheelhouse --python_version 3.10 --dry_run    # resolve and list only
#
# Then carry the folder and a checkout of the project to the node and run there, in the checkout:
#   pip install --no-index --find-links wheelhouse -e '.[gpu]'
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m medvlthinker.cluster.wheelhouse "$@"
