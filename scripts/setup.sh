#!/usr/bin/env bash
# Create .venv and install midiffusion with everything the workflow and the tests need ([all,test]),
# and, where apt-get can (as root), Debian's mricron-data: Colin27, the phantom's held-out anatomy.
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
# The default run's held-out test subjects are rendered from Colin27 (phantom.held_out_anatomy).
COLIN27=/usr/share/mricron/templates/ch2.nii.gz
if [ ! -f "$COLIN27" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mricron-data >/dev/null
  else
    echo "note: $COLIN27 is missing: run 'sudo apt-get install mricron-data', or set phantom.n_held_out: 0" >&2
  fi
fi
