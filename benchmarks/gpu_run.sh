#!/usr/bin/env bash
# One device-tool session (a bare CUDA machine without network): install mlip and the wheels
# carried in .whl/ (ase, e3nn, hdf5plugin, matscipy, vesin for Python 3.12), then run the GPU
# checks and benchmarks, each bounded in time, writing JSON and logs under $OUT (or ./gpu-out).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
cd /tmp && python3 -c "import mlip, torch; print(mlip.__version__, torch.__version__, torch.cuda.get_device_name())" && cd - >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -25; }
step pytest_gpu 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/mlip/neighbors
step md_gpu 180 python3 benchmarks/md.py --device cuda --dtype float32 --model lennard_jones facet-s \
  --cu 256 2048 10976 --molecules 64 --max-atoms-per-call 0 --mace-steps 0 --model-steps 50 \
  --steps 200 --output "$OUT/md_gpu.json"
step md_gpu_10k_molecules 60 python3 benchmarks/md.py --device cuda --dtype float32 --model facet-s \
  --cu --molecules 370 --max-atoms-per-call 0 --mace-steps 0 --model-steps 50 \
  --output "$OUT/md_gpu_370.json"
step md_gpu_mid 90 python3 benchmarks/md.py --device cuda --model facet --hparams \
  '{"species": [1, 6, 7, 8, 29], "hidden_irreps": "128x0e+64x1o+32x2e", "num_layers": 2, "sh_lmax": 3, "avg_num_neighbors": 20.0}' \
  --cu 10976 --molecules 64 --max-atoms-per-call 0 --mace-steps 0 --model-steps 20 \
  --output "$OUT/md_gpu_mid.json"
step gpu_checks 120 python3 benchmarks/gpu_checks.py --output "$OUT/gpu_checks.json" --train-seconds 45
step neighbors_gpu 45 python3 benchmarks/neighbors.py --cuda --repeats 3 --output "$OUT/neighbors_gpu.json"
