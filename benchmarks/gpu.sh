#!/bin/bash
# The GPU measurements in one script, run from the repository root on a machine whose python3
# has torch, numpy, pandas, pyarrow, scipy, pyyaml and tqdm (a dp-accounting wheel placed in
# wheels/ is installed first where the package is missing). Outputs go to $OUT (default
# benchmarks/gpu-out/). Each step has a time limit, so one slow step cannot eat the rest.
#
# Steps (STEPS, default all of them, in this order):
#   tests    the engine's checks on cuda (pytest -m gpu), the stacked ResNet's hook path included
#   bench    benchmarks train, pergrad and unlearn with --device cuda
#   resnet   benchmarks resnet --device cuda: the cifar10 configuration's stacked ResNet step
#   stages   digits-quick's train, score and unlearn stages on cuda, timed
#   fashion  configs/fashion-mnist-gpu.yaml (all 60,000 images, a CNN): `punl plan` on cuda,
#            then every stage and the tables (`punl unlearn`), timed; its published tables and
#            stage records are copied to $OUT/fashion-mnist-gpu. Its data travel with the
#            working tree: mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*
#            data/fashion-mnist/ here first (data_root: data), and carry data/fashion-mnist.
# On a lent device with 10 minutes a command, two commands: STEPS="tests resnet", then
# STEPS=fashion (each step's limits add up to at most 570 s in either).
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-benchmarks/gpu-out}; mkdir -p "$OUT"
STEPS=${STEPS:-tests bench resnet stages fashion}
punl() { python3 -c "import sys; from punl.commands.cli import main; sys.exit(main(sys.argv[1:]))" "$@"; }
elapsed() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -c "import dp_accounting" 2>/dev/null || python3 -m pip install -q --no-deps --no-index wheels/*.whl

for step in $STEPS; do case $step in
tests)
  timeout 240 python3 -m pytest -q --noconftest -p no:cacheprovider -m gpu \
    -W error::punl.engine.pergrad.StackingFallbackWarning tests/test_gpu.py tests/test_sgd.py 2>&1 \
    | tee "$OUT/gpu_tests.txt" | tail -15 ;;
bench)
  for b in train pergrad unlearn; do
    echo "== benchmarks $b --device cuda"
    timeout 200 python3 -m benchmarks $b --device cuda 2>&1 | tee "$OUT/bench_$b.txt"
  done ;;
resnet)
  echo "== benchmarks resnet --device cuda"
  timeout 240 python3 -m benchmarks resnet --device cuda 2>&1 | tee "$OUT/bench_resnet.txt" ;;
stages)
  echo "== digits-quick stages on cuda"
  for s in train score unlearn; do
    start=$(date +%s%N)
    timeout 300 bash -c "$(declare -f punl); punl $s configs/digits-quick.yaml --set device=cuda --out /tmp/punl-gpu" \
      > "$OUT/stage_$s.txt" 2>&1
    echo "stage $s rc=$? ms=$(elapsed $start)"; tail -3 "$OUT/stage_$s.txt"
  done | tee "$OUT/stages.txt" ;;
fashion)
  echo "== fashion-mnist-gpu: the forecast, then the study"
  run=$OUT/fashion-mnist-gpu; mkdir -p "$run"
  start=$(date +%s%N)
  timeout 90 bash -c "$(declare -f punl); punl plan configs/fashion-mnist-gpu.yaml --quiet --json" \
    > "$run/plan.json" 2> "$run/plan.err"
  echo "plan rc=$? ms=$(elapsed $start)"
  start=$(date +%s%N)
  timeout 480 bash -c "$(declare -f punl); punl unlearn configs/fashion-mnist-gpu.yaml --quiet --out /tmp/punl-fashion-gpu" \
    > "$run/unlearn.txt" 2>&1
  echo "unlearn rc=$? ms=$(elapsed $start)" | tee "$run/time.txt"
  cp -r /tmp/punl-fashion-gpu/published "$run/" 2>/dev/null
  for f in /tmp/punl-fashion-gpu/artifacts/*/_complete.json; do
    cp "$f" "$run/$(basename "$(dirname "$f")").json" 2>/dev/null
  done
  tail -5 "$run/unlearn.txt" ;;
esac; done
