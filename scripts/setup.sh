#!/usr/bin/env bash
# Create .venv and install midiffusion with everything the workflow and the tests need ([all,test]).
# torch and torchvision go first, as a matching pair; constraints.txt then keeps every later
# install from swapping them (and pins the rest for reproducibility).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[all,test]'
.venv/bin/python -c "import torch, torchvision, nnunetv2, ants, midiffusion; print('midiffusion ready: torch', torch.__version__)"
