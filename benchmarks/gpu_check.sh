#!/usr/bin/env bash
# The GPU measurements of issue 13 in one run (about 8 minutes on an H100), from the repository root:
#
#   bash benchmarks/gpu_check.sh
#
# With the device tool of this workplace: run(command="bash benchmarks/gpu_check.sh", timeout_s=590).
# Results go to $OUT (default /tmp/ovi-gpu-check): gpu_check.jsonl (one JSON line per part:
# {"part", "rc", "seconds", "result": the part's last JSON line}) and gpu_check.log (everything printed).
# Needs: python3 with a CUDA torch, transformers, numpy, pluggy, safetensors (the GPU image has them);
# faiss is optional (the faiss-on-the-host NN rows are skipped without it; carry a faiss-cpu wheel in
# .whl/ to get them, see docs/speed.md). Nothing is downloaded; the towers are random (no weights).
#
# Parts, most important first; each gets at most its own time limit and what is left of BUDGET_S:
#   env       nvidia-smi, torch/CUDA versions
#   pytest    the CUDA-only tests (host syncs of the engine and of the nn constraint, GPU search)
#   speed_b8  ViT-bigG-14 shape, bf16, batch 8: reference loop (500 steps, paper setting, fp16 autocast
#             + GradScaler as published) vs the engine with --schedule fast (160 steps): speedup at equal
#             cosine, steps/s, prompts/s, fraction of the bf16 matmul peak measured in the same run
#   speed_b1, speed_b32   the same shape at batch 1 and 32, 40 / 20 steps each loop (per-step numbers)
#   nn        the nn constraint's cost per engine step at batch 8 over 118,287 x 1280 (COCO-sized) stored
#             embeddings: exact matmul search on the GPU (and faiss flat on the host, if installed)
#   compile_default, compile_cudagraphs   engine only, batch 8, 40 steps: eager vs torch.compile (default
#             mode; then mode="reduce-overhead", i.e. CUDA graphs), alternating in one process, 3 rounds
#             (round 0 includes compilation)
#
# A dry run of the script's plumbing without a GPU: DEVICE=cpu SHAPE=tiny NN_SIZE=20000 bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/ovi-gpu-check}
BUDGET_S=${BUDGET_S:-500}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-vit-bigG-14}
NN_SIZE=${NN_SIZE:-118287}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
JSONL=$OUT/gpu_check.jsonl
: > "$LOG"
: > "$JSONL"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
TMP=$(mktemp -d)

if ls .whl/*.whl > /dev/null 2>&1; then  # optional carried wheels (faiss-cpu)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMP/site" .whl/*.whl \
    && export PYTHONPATH="$TMP/site"
fi
# the import names ovi_plugins / ovi_stats (package-dir mapping) without installing the package
mkdir -p "$TMP/path"
ln -sfn "$PWD/plugins" "$TMP/path/ovi_plugins"
ln -sfn "$PWD/stats" "$TMP/path/ovi_stats"
export PYTHONPATH="$TMP/path:$PWD${PYTHONPATH:+:$PYTHONPATH}"

START=$(date +%s)
part() {  # part NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    echo "### $name: skipped, ${left}s of the budget left" | tee -a "$LOG"
    printf '{"part": "%s", "rc": null, "skipped": "budget"}\n' "$name" >> "$JSONL"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "### $name (limit ${limit}s, at $(($(date +%s) - START))s): $*" | tee -a "$LOG"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$TMP/$name.txt" 2>&1
  local rc=$?
  cat "$TMP/$name.txt" >> "$LOG"
  local last
  last=$(grep '^{' "$TMP/$name.txt" | tail -1)
  printf '{"part": "%s", "rc": %d, "seconds": %d, "result": %s}\n' "$name" "$rc" "$(($(date +%s) - t0))" \
    "${last:-null}" >> "$JSONL"
}

part env 30 bash -c "nvidia-smi; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, \
transformers.__version__, torch.cuda.get_device_name(0)); import json; print(json.dumps({\"torch\": torch.__version__, \
\"cuda\": torch.version.cuda, \"gpu\": torch.cuda.get_device_name(0), \"transformers\": transformers.__version__}))'"
part pytest 150 $PY -m pytest -q -p no:cacheprovider \
  tests/test_engine.py::test_host_syncs_do_not_grow_with_steps \
  tests/test_nn_device_search.py::test_cuda_matmul_search_gives_the_exact_neighbours \
  tests/test_nn_device_search.py::test_cuda_nn_constraint_makes_no_host_sync_per_step \
  tests/test_engine.py::test_ovi_tower_bf16_copy_computes_what_autocast_computes tests/test_schedule.py
S="$PY benchmarks/ovi_speed.py --shape $SHAPE --device $DEVICE --peak-seconds 2"
part speed_b8 200 $S --batch 8
part speed_b1 90 $S --batch 1 --steps 40 --engine-steps 40
part speed_b32 120 $S --batch 32 --steps 20 --engine-steps 20
part nn 120 $PY benchmarks/nn_overhead.py --device $DEVICE --shape $SHAPE --batch 8 --steps 10 --sizes $NN_SIZE
part compile_default 200 $S --batch 8 --skip-reference --engine-steps 40 --repeats 2 --compile-compare default
part compile_cudagraphs 200 $S --batch 8 --skip-reference --engine-steps 40 --repeats 2 \
  --compile-compare reduce-overhead
echo "### done in $(($(date +%s) - START))s" | tee -a "$LOG"
rm -rf "$TMP"
