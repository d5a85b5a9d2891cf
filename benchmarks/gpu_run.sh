#!/usr/bin/env bash
# One device-tool session (a bare CUDA machine without network): install mlip and the wheels
# carried in .whl/ (ase, e3nn, hdf5plugin, matscipy, vesin for Python 3.12), then run the GPU
# checks and benchmarks, each bounded in time, writing JSON and logs under $OUT (or ./gpu-out).
#
#   bash benchmarks/gpu_run.sh                      # every step below
#   bash benchmarks/gpu_run.sh checks md_gpu         # only these steps (after the install)
#   CHECKS="syncs models" bash benchmarks/gpu_run.sh checks   # a subset of gpu_checks.py
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
cd /tmp && python3 -c "import mlip, torch; print(mlip.__version__, torch.__version__, torch.cuda.get_device_name())" && cd - >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -25; }
MIDSIZE='{"species": [1, 6, 7, 8, 29], "hidden_irreps": "128x0e+64x1o+32x2e", "num_layers": 2, "sh_lmax": 3, "avg_num_neighbors": 20.0}'

pytest_gpu() { run pytest_gpu 120 python3 -P -m pytest -q -p no:cacheprovider -m gpu tests; }
checks() {  # CUDA == CPU (neighbour list, MD, relaxation), host reads per step, compiled models
  run gpu_checks 200 python3 benchmarks/gpu_checks.py --output "$OUT/gpu_checks.json" \
    --checks ${CHECKS:-neighbors md syncs relax compile}; }
checks_all() { run gpu_checks_all 150 python3 benchmarks/gpu_checks.py \
  --output "$OUT/gpu_checks_all.json" --train-seconds 45; }
md_gpu() { run md_gpu 180 python3 benchmarks/md.py --device cuda --dtype float32 \
  --model lennard_jones facet-s --cu 256 10976 --molecules 64 --max-atoms-per-call none \
  --mace-steps 0 --model-steps 50 --steps 200 --repeats 1 --output "$OUT/md_gpu.json"; }
md_gpu_10k_molecules() { run md_gpu_10k_molecules 60 python3 benchmarks/md.py --device cuda \
  --dtype float32 --model facet-s --cu --molecules 370 --max-atoms-per-call none --mace-steps 0 \
  --model-steps 50 --repeats 1 --output "$OUT/md_gpu_370.json"; }
md_gpu_compiled() { run md_gpu_compiled 150 python3 benchmarks/md.py --device cuda --compile \
  --dtype float32 --model lennard_jones facet-s --cu --molecules 64 --max-atoms-per-call none \
  --mace-steps 0 --model-steps 50 --steps 200 --repeats 1 --output "$OUT/md_gpu_compiled.json"; }
md_gpu_mid() { run md_gpu_mid 90 python3 benchmarks/md.py --device cuda --model facet \
  --hparams "$MIDSIZE" --cu 10976 --molecules 64 --max-atoms-per-call none --mace-steps 0 \
  --model-steps 20 --max-edges-per-block 65536 --output "$OUT/md_gpu_mid.json"; }
neighbors_gpu() { run neighbors_gpu 45 python3 benchmarks/neighbors.py --cuda --repeats 3 \
  --output "$OUT/neighbors_gpu.json"; }

ALL="pytest_gpu checks md_gpu md_gpu_10k_molecules md_gpu_compiled md_gpu_mid neighbors_gpu"
for step in ${*:-$ALL}; do
  case " $ALL checks_all " in
    *" $step "*) "$step" ;;
    *) echo "unknown step $step (steps: $ALL checks_all)"; exit 2 ;;
  esac
done
