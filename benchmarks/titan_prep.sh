#!/usr/bin/env bash
# Bundle torchtitan 0.2.2 and the dependencies the GPU host lacks into .titan/ (ignored by git),
# for `gpu_round.sh titan`. The host has no package registry: the wheels travel with the call.
#
#   bash benchmarks/titan_prep.sh          # here, once (about 15 MB)
#   then on the host, after .device/setup.sh:   . .titan/setup.sh       (carry .titan)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qxF /.titan/ .git/info/exclude 2>/dev/null || echo /.titan/ >> .git/info/exclude
rm -rf .titan && mkdir -p .titan/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .titan/whl torchtitan==0.2.2 torchdata tomli tyro docstring-parser typeguard shtab \
  tensorboard absl-py grpcio markdown protobuf tensorboard-data-server werkzeug einops six \
  2>&1 | grep -v "is ignored" || true
cat > .titan/setup.sh <<'SETUP'
# Source on the GPU host after .device/setup.sh: torchtitan 0.2.2 and its missing dependencies.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .titan/whl/*.whl || return 1
python3 -c "import torchtitan, torchdata, tyro; print('titan ready', getattr(torchtitan, '__version__', '?'))"
SETUP
echo ".titan/ ready ($(du -sh .titan | cut -f1), $(ls .titan/whl | wc -l) wheels)"
