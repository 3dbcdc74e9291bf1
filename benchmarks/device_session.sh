#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one call (device time is short):
#   1. the GPU tests with the GPU visible (they run on the device, not in Numba's simulator;
#      tests/test_gpu.py's real-GPU test compares leukemia CPU vs GPU); about 10 minutes in all;
#   2. the set-scoring kernels alone, old (one thread per permutation) and new (block
#      ranking + ES from member ranks, each sort, each size class alone), on the cudaGSEA
#      shape (benchmarks/bench_gpu_kernels.py);
#   3. the cudaGSEA workload at 1e4, 1e5, 1e6 permutations on the GPU (new kernels), the old
#      kernel at 2e3, plus leukemia GPU and CPU in the same run (benchmarks/bench_cudagsea.py),
#      with peak device memory and each run's setup time; then preranked GSEA on the same
#      shape, CPU and GPU (3b);
#   4. Nsight Compute on the hot kernels (memory throughput, duration), where ncu works.
# Results go to $OUT (the device tool brings them back) or benchmarks/results/device_<date>/;
# commit them to benchmarks/results/ with the machine.txt this writes.
#
# On the development machine first (see benchmarks/README.md, "On a GPU machine"):
#   mkdir -p .device_data && cp -r ../shared/data/{leukemia,genesets,reference} .device_data/
#   echo /.device_data/ >> .git/info/exclude
# then run, carrying .device_data:   bash benchmarks/device_session.sh [quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/device_$(date -u +%F)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
# permenrich itself, offline (the image has setuptools and wheel); kernels/ is mapped to
# permenrich.kernels by the install, so a bare PYTHONPATH=src would not do.
# Where the image's setuptools is too old for pyproject's metadata, fall back to the same
# layout by hand: kernels/ linked in as permenrich/kernels, src/ on the path.
if ! "$python" -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$out/install.log" 2>&1; then
  echo "install failed (see install.log), running from src/ with kernels/ linked in"; tail -3 "$out/install.log"
  ln -sfn ../../kernels src/permenrich/kernels
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
data=../shared/data
[ -d .device_data ] && data=$PWD/.device_data
export PERMENRICH_SHARED_DATA=$data
quick=${1:-}

{
  date -u +"%F %T UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$python" - <<'PY'
import platform
import cupy, numba, numpy, scipy, pandas, h5py
from numba import cuda
print(f"python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
      f"pandas {pandas.__version__}, h5py {h5py.__version__}, numba {numba.__version__}, cupy {cupy.__version__}, "
      f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, driver {cupy.cuda.runtime.driverGetVersion()}")
print("numba sees:", cuda.get_current_device().name)
from importlib.metadata import version
print("numba-cuda", version("numba-cuda"), "| setuptools", version("setuptools"))
PY
  git rev-parse HEAD 2>/dev/null || true
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# 0. the kernels' disk cache (new, never yet run on a device): if a tiny GPU run fails with
#    it and passes without, run everything without it (and say so in machine.txt)
smoke='import numpy as np, pandas as pd, permenrich
g = [f"g{i}" for i in range(40)]
x = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 8)), index=g)
permenrich.gsea(x, ["a"] * 4 + ["b"] * 4, {"S": g[:10], "T": g[5:25]}, permutations=20, min_size=5, device="gpu")'
if ! "$python" -c "$smoke" > /tmp/cache_smoke.log 2>&1; then
  if PERMENRICH_GPU_KERNEL_CACHE=0 "$python" -c "$smoke" >> /tmp/cache_smoke.log 2>&1; then
    export PERMENRICH_GPU_KERNEL_CACHE=0
    { echo "kernel disk cache failed on this device, turned off:"; tail -5 /tmp/cache_smoke.log; } >> "$out/machine.txt"
  else
    { echo "a tiny GPU run fails with and without the kernel cache:"; tail -8 /tmp/cache_smoke.log; } >> "$out/machine.txt"
  fi
fi

# 1. tests (anndata-based tests are skipped or ignored where the image lacks anndata)
ignore=()
"$python" -c "import anndata" 2>/dev/null || ignore=(--ignore=tests/test_streaming.py --ignore=tests/test_demo.py)
timeout 150 "$python" -m pytest -q -rfEs --tb=short -p no:cacheprovider "${ignore[@]}" tests/test_gpu.py \
  tests/test_gpu_kernels.py > "$out/pytest_gpu.log" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$out/pytest_gpu.log" | tail -25

# 2. the set-scoring kernels alone, old and new side by side (scores compared exactly)
timeout 120 "$python" benchmarks/bench_gpu_kernels.py --batch 4096 --old-batch 256 --repeats 3 \
  --out "$out/gpu_kernels_$(date -u +%F).md" 2>&1 | tee /tmp/bench_gpu_kernels.log | tail -7

# 3. whole runs, with the fastest sort of each size class that step 2 measured (same scores
#    whatever the sort; the report names the sorts used)
best=$(sed -n 's/^fastest sort per class: //p' /tmp/bench_gpu_kernels.log | tail -1)
[ -n "$best" ] && export PERMENRICH_GPU_ES_SORT=$best
perms=(10000 100000 1000000)
[ "$quick" = quick ] && perms=(10000)
timeout 210 "$python" benchmarks/bench_cudagsea.py --devices gpu gpu-per-permutation cpu --cpu-max 10000 \
  --old-max 2000 --leukemia-cpu-threads 2 --permutations "${perms[@]}" --data-dir "$data" \
  --out "$out/cudagsea_gpu_cpu_$(date -u +%F).md" --profile "$out/profiles_gpu.txt" 2>&1 | tail -20

# 3b. preranked GSEA on the same shape (random sets drawn on the device), CPU first so that
#     a slow GPU run cut short by the timeout still leaves the comparison's first row
timeout 60 "$python" benchmarks/bench_cudagsea.py --prerank --devices cpu gpu --cpu-max 10000 \
  --permutations 10000 100000 --out "$out/prerank_gpu_cpu_$(date -u +%F).md" 2>&1 | tail -5

# 4. kernel counters (a short run; ncu replays each kernel, so keep it small)
if command -v ncu >/dev/null && [ "$quick" != quick ]; then
  timeout 60 ncu --target-processes all --kernel-name regex:"two_group|block_rank|es_from_ranks|ks_kernel|random_set" \
    --launch-count 8 --section SpeedOfLight --section MemoryWorkloadAnalysis --csv \
    "$python" benchmarks/bench_gpu_kernels.py --batch 512 --old-batch 64 --repeats 1 > "$out/ncu_kernels.csv" 2>&1 || true
fi
[ -s "$out/install.log" ] || rm -f "$out/install.log"  # at most 8 files come back
ls -la "$out"
