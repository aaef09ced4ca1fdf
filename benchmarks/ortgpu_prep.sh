#!/usr/bin/env bash
# Bundle onnxruntime-gpu 1.31 (its CUDA provider links CUDA 13, as the GPU host's torch does) for
# `gpu_round.sh infer`'s `ort` section and the ORT CUDA GPU test. Its wheel (about 255 MB) is larger
# than one device call may carry (64 MiB with the working tree), so it is cut into parts, one
# folder each: .ortgpu1/ ... .ortgpuN/ (ignored by git).
#
#   bash benchmarks/ortgpu_prep.sh            # here; ORTGPU_PART_MB (default 56) sets a part's size
#   then one device call per part, back to back on the same warm host (carry .ortgpuK):
#       mkdir -p ~/ortgpu && cp .ortgpuK/* ~/ortgpu/
#   and, in the call that uses it (after . .device/setup.sh):
#       . ~/ortgpu/setup.sh      # joins the parts, checks the sha256, installs into /tmp/site
#
# The wheel's CUDA libraries (cudart, cublas, cuDNN 9) come from torch's nvidia-* wheels on the
# host: foundry_infer.ort_engine loads them before the CUDA provider starts.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
part_mb=${ORTGPU_PART_MB:-56}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$tmp" "onnxruntime-gpu==1.31.*" flatbuffers 2>&1 | grep -v "is ignored" || true
wheel=$(ls "$tmp"/onnxruntime_gpu-*.whl)
rm -rf .ortgpu[0-9]*
(cd "$tmp" && cat "$(basename "$wheel")" | split -b "${part_mb}M" -d -a 2 - part)
n=0
for p in "$tmp"/part*; do
  n=$((n + 1))
  grep -qxF "/.ortgpu$n/" .git/info/exclude 2>/dev/null || echo "/.ortgpu$n/" >> .git/info/exclude
  mkdir -p ".ortgpu$n" && mv "$p" ".ortgpu$n/"
done
cp "$tmp"/flatbuffers-*.whl .ortgpu1/
name=$(basename "$wheel")
sum=$(sha256sum "$wheel" | cut -d' ' -f1)
cat > .ortgpu1/setup.sh <<SETUP
# Source on the GPU host once every part is in ~/ortgpu (see benchmarks/ortgpu_prep.sh).
have=\$(ls ~/ortgpu/part* 2>/dev/null | wc -l)
[ "\$have" = $n ] || { echo "~/ortgpu holds \$have of $n parts: copy the missing .ortgpuK folders first"; return 1; }
cat ~/ortgpu/part* > /tmp/$name || return 1
echo "$sum  /tmp/$name" | sha256sum -c --quiet || { echo "the joined wheel's sha256 differs"; return 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
  /tmp/$name ~/ortgpu/flatbuffers-*.whl || return 1
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
SETUP
echo "$n parts: $(du -sh .ortgpu[0-9]* | tr '\t' ' ' | paste -sd, -)"
