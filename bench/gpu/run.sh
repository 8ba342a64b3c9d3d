#!/usr/bin/env bash
# GPU benchmarks of the training recipe and of inference on a random-init Qwen2.5-VL-7B (docs/benchmarks.md), or
# with ARCH=qwen3_vl / ARCH=gemma3 on a random-init Qwen3-VL-8B / MedGemma-4B with that family's recipe.
# Run from the repository root on the GPU machine, with the wheels of gpu.md §3 (+ liger-kernel) in .gpu/whl:
#   [ARCH=qwen2_5_vl|qwen3_vl|gemma3] bash bench/gpu/run.sh STAGE...
# Stages (in the order given; each one is skipped when the time budget BUDGET (s) would be exceeded):
#   vit         vision tower alone: per-window sdpa loop vs packed attention (bench/gpu/vit_check.py; Qwen2.5-VL)
#   A           plain `swift sft` = the gpu.md anchor A (batch 4, gradient checkpointing, sdpa, 4 workers)
#   R<bs>       our recipe (`python -m training.launch`, $RECIPE: the ARCH's recipe) as written, 1 step = batch <bs>
#   B<bs>       our recipe, batch <bs>, gradient checkpointing off, 8 loader workers
#   O<bs>       B<bs> + packed ViT attention (callback vit_packed)
#   L<bs>       O<bs> + --use_liger_kernel true
#   X<bs>       O<bs> + --lora_dropout 0 --tf32 true --use_liger_kernel true (falls back to Y<bs> = without liger)
#   Z<bs>       X<bs> + --lora_dtype bfloat16 (adapters kept in bf16: faster, a numerical trade-off)
#   V<bs>       X<bs> + zero-padded vision MLP (callback vit_mlp_pad)
#   N<bs>       V<bs> + fused LoRA forward (callback lora_fused)
#   K<bs>       N<bs> + compiled vision rotary embedding (callback vit_rope_compiled)
#   G<bs>       O<bs> with gradient checkpointing on
#   P<bs> Q<bs> X<bs> data-parallel on all visible GPUs (global batch <bs> x GPUs) with DeepSpeed ZeRO-2 / ZeRO-3
#   I16 I64     inference: TransformersEngine batch 16 (the medvqa template loop) / batch 64 + packed ViT
#   F<bs>       inference: the `make infer` path (inference.backends, batch <bs>, fast attention), profiled
#   E<bs>       inference: TransformersEngine batch <bs>, no packed ViT (what `make infer` uses), profiled
#   H<bs>       inference: plain transformers generate, batch <bs>, left padding, packed ViT (Qwen2.5-VL; else stock)
#   VB          inference with vLLM (needs it importable): `make infer`'s vLLM path vs plain LLM.generate vs the
#               transformers path (bench/gpu/vllm_bench.py; VB_STAGES overrides its stage list), NINFER items;
#               with another ARCH use VB_STAGES=ours,tf (its `plain` stage writes Qwen2.5-VL's chat prompt)
#   T2          Subtask 2: the per-row path of 88f43d9 on a few rows (BEFORE_TREE, default build/before-88f43d9:
#               `python -m bench.task2_bench --extract-before` makes it; carry it) vs the stage-by-stage
#               `submission.task2` on T2_ROWS (1500) rows + 2000 calibration rows; resumable: run T2 again in the
#               next call until its log says complete. TASK2_ARGS: submission.task2 flags of the measured build (e.g.
#               "--scorer vllm", "--grid 4 --occlusion-max-pixels 160000"), with its own T2_WORK folder per variant;
#               T2_ARGS: more bench.gpu.task2_bench staged flags (e.g. --answers reference); BEFORE_TREE= skips the
#               per-row side
#   T2A         occlusion agreement: grid 4 / grid 3 / fewer image tokens vs grid 6 (FRAMES=real frames folder)
# Vision-tower callbacks (vit_packed, vit_mlp_pad, vit_rope_compiled) change only Qwen2.5-VL's tower; with another
# ARCH they print why they left the model alone, so O/V/N/K there measure what applies (lora_fused: N vs X).
# On 80 GB cards the <bs> > 8 stages run at batch 8. bench/gpu/lanes.sh runs two stage lists on two GPUs at once.
# Writes $OUT/summary.json, $OUT/logs.tgz; the console shows the table last.
set -uo pipefail
# logs per model family (the summary's MFU uses one model's parameter counts); the data is shared
OUT=${OUT:-/tmp/bench_out}; W=${W:-/tmp/bench}
LOGS=logs$([ "${ARCH:-qwen2_5_vl}" = qwen2_5_vl ] || echo "_$ARCH"); L=$W/$LOGS
BUDGET=${BUDGET:-560}; STEPS=${STEPS:-31}; PROFILE=${PROFILE:-29:3}; NINFER=${NINFER:-1000}
mkdir -p "$OUT" "$L"
export HF_HUB_OFFLINE=1 MODELSCOPE_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 MAX_PIXELS=640000
ARCH=${ARCH:-qwen2_5_vl}
case $ARCH in
  qwen2_5_vl) RECIPE=recipes/qwen2_5_vl/7B_lora.args; SWIFT_TYPE=qwen2_5_vl; MODEL=${MODEL:-$W/model} ;;
  qwen3_vl) RECIPE=recipes/qwen3_vl/8B_lora.args; SWIFT_TYPE=qwen3_vl; MODEL=${MODEL:-$W/model_qwen3_vl} ;;
  gemma3) RECIPE=recipes/medgemma/4B_lora.args; SWIFT_TYPE=gemma3_vision; MODEL=${MODEL:-$W/model_gemma3} ;;
  *) echo "ARCH must be qwen2_5_vl, qwen3_vl or gemma3 (got $ARCH)"; exit 2 ;;
esac
DATA=${DATA:-$W/data}; PLUGIN=bench/gpu/swift_plugin.py
# GPU=<index> pins this invocation to one card (lanes.sh runs two invocations side by side on a 2-GPU machine)
[ -n "${GPU:-}" ] && export CUDA_VISIBLE_DEVICES=$GPU
# Recipe stages inherit the speed fragment's PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (since runs 7-9);
# ALLOC_CONF=<value> replaces it for every recipe stage of this invocation.
t0=${T0:-$(date +%s)}; el() { echo $(( $(date +%s) - t0 )); }; ts() { echo "[$(el)s]${GPU:+ gpu$GPU} $*"; }
finish() {
  python3 -m bench.gpu.summarize "$L" "$MODEL" --out "$OUT/summary.json" 2>&1 | tail -40
  tar -czf "$OUT/logs.tgz" -C "$W" "$LOGS"; ts "done"
}
[ -n "${NOFINISH:-}" ] || trap finish EXIT
export PYTHONPATH=/tmp/site:$PWD
MEM_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
if [ -z "${SKIP_SETUP:-}" ]; then
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$L/gpu.txt"
ts "install wheels"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  > "$L/pip.log" 2>&1 || { tail -20 "$L/pip.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
python3 - <<'EOF' 2>&1 | tee "$L/versions.txt" || exit 1
import importlib.metadata as md, importlib.util, sys, torch
from swift import sft_main  # noqa: F401  (the import is the check)
names = ['ms-swift', 'transformers', 'peft', 'trl', 'datasets', 'accelerate', 'torch', 'liger-kernel', 'triton']
print('python', sys.version.split()[0], {n: md.version(n) for n in names}, torch.cuda.get_device_name(0),
      'cuda', torch.version.cuda, 'varlen_attn', importlib.util.find_spec('torch.nn.attention.varlen') is not None)
EOF
ts "build model + data"
[ -f "$MODEL/config.json" ] || python3 -m bench.gpu.build_model "$MODEL" --arch $ARCH --device cuda \
  > "$L/build.log" 2>&1 \
  || { tail -30 "$L/build.log"; exit 1; }
[ -f "$DATA/swift/train-original.jsonl" ] || python3 -m bench.gpu.make_data "$DATA" 1536 --workers 16 > "$L/data.log" 2>&1 \
  || { tail -30 "$L/data.log"; exit 1; }
tail -1 "$L/build.log"; tail -1 "$L/data.log" 2>/dev/null   # no data.log: the data was there already
fi

left() { echo $(( BUDGET - $(el) )); }
sft() {  # name, need_s, command...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then ts "skip $name (budget)"; return 0; fi
  ts "sft $name: $*"
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,power.draw,clocks.sm --format=csv,noheader -lms 500 \
    ${GPU:+-i $GPU} > "$L/smi_$name.csv" 2>/dev/null & local smi=$!
  BENCH_OUT=$L BENCH_NAME=$name BENCH_PROFILE=$PROFILE BENCH_WARMUP=8 timeout $(left) "$@" > "$L/sft_$name.log" 2>&1
  local rc=$?; kill $smi 2>/dev/null
  ts "sft $name rc=$rc"; grep -E "\[bench\]|Error|error:" "$L/sft_$name.log" | cut -c1-900 | tail -6
  [ $rc = 0 ] || tail -15 "$L/sft_$name.log"
  return $rc
}
plain() {  # the gpu.md anchor A, unchanged apart from the step count and the measuring callback
  sft "$1" 150 python3 -m swift.cli.main sft --model "$MODEL" --model_type $SWIFT_TYPE --template $SWIFT_TYPE \
    --check_model false --dataset "$DATA/swift/train-original.jsonl" --torch_dtype bfloat16 --attn_impl sdpa \
    --tuner_type lora --target_modules all-linear --gradient_accumulation_steps 1 --max_steps $STEPS --logging_steps 5 \
    --save_strategy no --max_length 2048 --dataloader_num_workers 4 --dataset_num_proc 4 --report_to none \
    --output_dir "$W/out_$1" --per_device_train_batch_size 4 --gradient_checkpointing true \
    --external_plugins $PLUGIN --callbacks bench_perf
}
recipe() {  # name, batch, extra flags...: the real `make sft` path, one optimizer step = one batch
  local name=$1${SUFFIX:-} bs=$2; shift 2   # SUFFIX tells a repeated stage apart (e.g. warm Triton caches)
  sft "$name" 150 env ${ALLOC_CONF:+PYTORCH_CUDA_ALLOC_CONF=$ALLOC_CONF} python3 -m training.launch --recipe $RECIPE \
    --data "$DATA" \
    --run "$W/run_$name" --model "$MODEL" -- --max_steps $STEPS --global_batch $(( bs * ${NP:-1} )) \
    --per_device_train_batch_size $bs \
    --logging_steps 5 --save_strategy no --eval_strategy no --report_to none --external_plugins $PLUGIN "$@"
}
big() { local bs=$1; [ "$MEM_MIB" -lt 100000 ] && [ "$bs" -gt 8 ] && bs=8; echo $bs; }  # 80 GB cards: batch 8
infer() {  # name, need_s, infer_bench args...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then ts "skip $name (budget)"; return 0; fi
  ts "infer $name: $*"
  timeout $(left) python3 -m bench.gpu.infer_bench "$MODEL" "$DATA" --n $NINFER --name $name --out "$L/infer_$name.json" \
    "$@" > "$L/infer_$name.log" 2>&1
  ts "infer $name rc=$?"; grep -E "\[bench\]|Error|error:" "$L/infer_$name.log" | cut -c1-600 | tail -4
}
TUNED="--lora_dropout 0 --tf32 true"   # dropout kernels off; the fp32 LoRA matmuls on TF32 tensor cores
FAST="--dataloader_num_workers 8 --dataset_num_proc 8 --gradient_checkpointing false"
for stage in "$@"; do
  case $stage in
    vit) ts "vit check"; timeout 120 python3 -m bench.gpu.vit_check "$MODEL" "$DATA" --images 16 --repeat 5 \
           --out "$L/vit.json" > "$L/vit.log" 2>&1; ts "vit rc=$?"; tail -2 "$L/vit.log" | cut -c1-600 ;;
    A|A2) plain "$stage" ;;
    R*) recipe "$stage" ${stage#R} --callbacks bench_perf ;;
    B*) bs=$(big ${stage#B}); recipe "B$bs" $bs $FAST --callbacks bench_perf ;;
    O*) bs=$(big ${stage#O}); recipe "O$bs" $bs $FAST --callbacks bench_perf vit_packed ;;
    L*) bs=$(big ${stage#L}); recipe "L$bs" $bs $FAST --use_liger_kernel true --callbacks bench_perf vit_packed ;;
    X*) bs=$(big ${stage#X}); recipe "X$bs" $bs $FAST $TUNED --use_liger_kernel true --callbacks bench_perf vit_packed \
          || recipe "Y$bs" $bs $FAST $TUNED --callbacks bench_perf vit_packed ;;   # Y = X without liger
    Z*) bs=$(big ${stage#Z}); recipe "Z$bs" $bs $FAST $TUNED --lora_dtype bfloat16 --use_liger_kernel true \
          --callbacks bench_perf vit_packed ;;
    P*|Q*) bs=$(big ${stage#?}); zero=$([ "${stage:0:1}" = P ] && echo zero2 || echo zero3)
          NP=$(nvidia-smi -L | wc -l) recipe "$stage" $bs $FAST $TUNED --use_liger_kernel true --deepspeed $zero \
          --callbacks bench_perf vit_packed ;;   # X<bs> on every visible GPU, DeepSpeed ZeRO-2 (P) / ZeRO-3 (Q)
    V[0-9]*) bs=$(big ${stage#V}); recipe "V$bs" $bs $FAST $TUNED --use_liger_kernel true \
          --callbacks bench_perf vit_packed vit_mlp_pad ;;
    N*) bs=$(big ${stage#N}); recipe "N$bs" $bs $FAST $TUNED --use_liger_kernel true \
          --callbacks bench_perf vit_packed vit_mlp_pad lora_fused ;;
    K*) bs=$(big ${stage#K}); recipe "K$bs" $bs $FAST $TUNED --use_liger_kernel true \
          --callbacks bench_perf vit_packed vit_mlp_pad vit_rope_compiled lora_fused ;;
    G*) bs=$(big ${stage#G}); recipe "G$bs" $bs $FAST --gradient_checkpointing true --callbacks bench_perf vit_packed ;;
    I16) infer I16 200 --mode engine --batch 16 ;;
    I64) infer I64 120 --mode engine --batch 64 --packed-vit ;;
    F*) infer "$stage" 90 --mode ours --batch ${stage#F} --attention fast --profile "$L/profile_$stage.txt" ;;
    E*) infer "$stage" 120 --mode engine --batch ${stage#E} --profile "$L/profile_$stage.txt" ;;  # make infer today
    H*) infer "$stage" 90 --mode hf --batch ${stage#H} $([ $ARCH = qwen2_5_vl ] && echo --packed-vit) \
          --profile "$L/profile_$stage.txt" ;;
    VB) ts "vllm bench"; timeout $(left) python3 -m bench.gpu.vllm_bench "$MODEL" "$DATA" --n $NINFER \
          --budget $(( $(left) - 20 )) ${VB_STAGES:+--stages $VB_STAGES} --work "$W/vllm_bench${LOGS#logs}" \
          --out "$L/vllm_bench.json" > "$L/vllm_bench.log" 2>&1; ts "vllm bench rc=$?"; tail -16 "$L/vllm_bench.log" ;;
    T2) ts "task2 staged"; timeout $(left) python3 -m bench.gpu.task2_bench staged "$MODEL" "$DATA" \
          --rows ${T2_ROWS:-1500} --budget $(( $(left) - 30 )) --before-tree "${BEFORE_TREE-build/before-88f43d9}" \
          --work "${T2_WORK:-build/bench-task2-gpu}" --task2-args "${TASK2_ARGS:-}" --out "$L/task2.json" ${T2_ARGS:-} \
          > "$L/task2.log" 2>&1
        ts "task2 rc=$?"; grep -E "\[bench\]|Error|error:" "$L/task2.log" | cut -c1-1500 | tail -4; cp "$L/task2.json" "$OUT/" ;;
    T2A) ts "task2 agreement"; timeout $(left) python3 -m bench.gpu.task2_bench agreement "$MODEL" --synthetic "$DATA" \
          ${FRAMES:+--frames "$FRAMES"} --out "$L/task2_agreement.json" ${T2A_ARGS:-} > "$L/task2_agreement.log" 2>&1
        ts "agreement rc=$?"; grep -E "\[bench\]|Error|error:" "$L/task2_agreement.log" | cut -c1-1500 | tail -4
        cp "$L/task2_agreement.json" "$OUT/" ;;
    *) echo "unknown stage $stage" ;;
  esac
done
