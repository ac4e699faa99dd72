#!/bin/bash
# The GPU measurements in one script: the engine's checks on cuda (pytest -m gpu), the
# benchmarks on cuda, and digits-quick's three stages timed on cuda. Run from the repository root
# on a machine whose python3 has torch, pandas, pyarrow, scipy, pyyaml and tqdm; a dp-accounting
# wheel placed in wheels/ is installed first where the package is missing. Outputs go to $OUT
# (default benchmarks/gpu-out/). Each step has a time limit, so one slow step cannot eat the rest.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-benchmarks/gpu-out}; mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -c "import dp_accounting" 2>/dev/null || python3 -m pip install -q --no-deps --no-index wheels/*.whl
timeout 180 python3 -m pytest -q --noconftest -p no:cacheprovider -m gpu \
  -W error::punl.engine.pergrad.StackingFallbackWarning tests/test_gpu.py tests/test_sgd.py 2>&1 | tee "$OUT/gpu_tests.txt" | tail -15
for b in train pergrad resnet unlearn; do
  echo "== benchmarks $b --device cuda"; timeout 200 python3 -m benchmarks $b --device cuda 2>&1 | tee "$OUT/bench_$b.txt"
done
echo "== digits-quick stages on cuda"
for s in train score unlearn; do
  start=$(date +%s%N)
  timeout 300 python3 -c "import sys; from punl.commands.cli import main; sys.exit(main(sys.argv[1:]))" \
    $s configs/digits-quick.yaml --set device=cuda --out /tmp/punl-gpu > "$OUT/stage_$s.txt" 2>&1
  echo "stage $s rc=$? ms=$(( ($(date +%s%N) - start) / 1000000 ))"; tail -3 "$OUT/stage_$s.txt"
done | tee "$OUT/stages.txt"
