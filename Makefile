# Medico 2026 recipes: Kvasir-VQA-x1 -> ms-swift fine-tuning -> fast inference -> scored, validated submissions.
# The whole run, on GPU nodes with the hub:
#   make setup && make prepare && make sft && make export && make infer && make score && make submit-task1 && make submit-task2
# Offline on a CPU, the same targets on a tiny model and synthetic data:  make demo
# `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# SETUP=venv (default): targets install .venv on first use (`make setup`). SETUP=none: run with PY as it is, on a
# machine whose Python already holds the stack (a cluster image, a GPU node with carried wheels); nothing installs.
SETUP   ?= venv
VENV    ?= .venv
SETUP_STAMP := $(VENV)/.medico-setup
ifeq ($(SETUP),venv)
PY      ?= $(VENV)/bin/python
STACK   := $(SETUP_STAMP)
else ifeq ($(SETUP),none)
PY      ?= python3
STACK   :=
else
$(error SETUP must be venv or none (got '$(SETUP)'))
endif

# ---- data ---------------------------------------------------------------------------------------------------------
DATASET ?= SimulaMet/Kvasir-VQA-x1#     hub id, or a local copy: parquet file / folder of parquet files / save_to_disk folder
IMAGES  ?=#                             folder of <img_id>.jpg for a local copy (default: the copy's own image column/folder)
DATA    ?= data/prepared#               where `make prepare` writes images, ms-swift JSONL, subsets, stats
AUG_K   ?= 10#                          weakly augmented variants per image (1 = the official one-variant layout)
AUGMENT_IMPL ?= opencv#                 weak transform: opencv (fast) or torchvision (pixel-exact reference, ~6x slower)
PREPARE_ARGS ?=#                        extra flags, e.g. --curriculum --train-on-test --lenient --system-prompt "..."
KVASIR_SEG ?=#                          optional grounding data: a Kvasir-SEG folder (images/ + masks/)
KVASIR_INSTRUMENT ?=#                   optional grounding data: a Kvasir-Instrument folder (images/ + boxes *.json)
SYNTHETIC ?=#                           optional grounding data: a data_prep.synthetic copy (its own boxes; DATA's train images)
SYNTHETIC_ARGS ?=#                      make synthetic: more data_prep.synthetic flags, e.g. --qa-per-image 8 --workers 16
# ---- training -----------------------------------------------------------------------------------------------------
RECIPE  ?= recipes/qwen2_5_vl/7B_lora.args
RUN     ?= runs/$(basename $(notdir $(RECIPE)))
MODEL   ?=#                             sft: override the recipe's base model; infer/submit: the model to run (default $(RUN)/merged)
RESUME  ?=#                             RESUME=1 continues `make sft` from the latest checkpoint in $(RUN)
SFT_ARGS ?=#                            extra ms-swift flags appended last (they win)
HUB_MODEL_ID ?=#                        `make export` pushes the merged model here when a hub token is present (hub checked first)
# ---- inference and scoring ----------------------------------------------------------------------------------------
SPLIT   ?= task1_public-original#       <split>-<setting>: split in train val test task1_public task2_val; setting original augmented
INFER_MODEL = $(if $(MODEL),$(MODEL),$(RUN)/merged)
PRED    ?= preds/$(notdir $(RUN))/$(SPLIT).jsonl
BACKEND ?= auto#                        auto = vLLM when installed and a GPU is visible, else ms-swift transformers
MAX_NEW_TOKENS ?= 64#                   answer length cap, shared by infer and both submissions (answers must agree)
INFER_ARGS ?=#                          e.g. --batch-size 32 --logprobs
REPORT  ?= $(basename $(PRED))-report
BASELINE_OUT ?= preds/baseline#         make baseline writes its predictions, scores and report here
ADAPTERS ?=#                            infer: LoRA adapter(s) on MODEL (folder or hub id; README: the x1 paper's one)
# ---- serving and asking -------------------------------------------------------------------------------------------
SERVE_HOST ?= 127.0.0.1#                serve: address to listen on (0.0.0.0 = every interface)
SERVE_PORT ?= 8000#                     serve: port of the OpenAI-compatible endpoint
SERVE_ARGS ?=#                          serve: extra `swift deploy` flags, e.g. --vllm_gpu_memory_utilization 0.8
IMAGE   ?=#                             ask: one image file
Q       ?=#                             ask: the question
URL     ?=#                             ask: a running server (http://127.0.0.1:8000/v1) instead of loading MODEL here
EXPLAIN ?=#                             ask: EXPLAIN=1 adds the answer's Subtask 2 explanation (with MODEL, not URL)
# ---- submission ---------------------------------------------------------------------------------------------------
HUB_REPO ?=#                            user/name of the Hugging Face model repo the organizers will run
TEAM    ?= submission/team.json#        team details (copy submission/team.example.json and fill it in)
NAME    ?= $(notdir $(RUN))
SUBMIT  ?=#                             SUBMIT=1: also call `medvqa validate_and_submit` (asks for confirmation)
DRY_RUN ?=#                             DRY_RUN=1: build + check offline, never upload
SUBMIT_DATASET ?=#                      local copy for the offline dry run of the generated script
SUBMISSION_BUILD ?= submission/build#   where the hub-ready folders are built (task1/<NAME>, task2/<NAME>)
TASK1_PRED ?= preds/$(notdir $(RUN))/task2_val-original.jsonl# the Task 1 answers of task2_val (default + missing: make infer)
CALIBRATION ?= preds/$(notdir $(RUN))/val-original.jsonl# labelled predictions with log-probs (default + missing: make infer)
CALIBRATION_ROWS ?= 2000#               stratified sample of CALIBRATION used to calibrate (0 = every row)
TASK2_ARGS ?=#                          e.g. --grid 4 --occlusion-max-pixels 200704 --calibration-method isotonic
# ---- demo (offline, CPU) ------------------------------------------------------------------------------------------
DEMO    ?= build/demo
ARCH    ?= qwen2_5_vl#                  model family of `tiny-model` and `grounding-data`: qwen2_5_vl, qwen3_vl, gemma3
TINY_MODEL ?= models/$(if $(filter qwen2_5_vl,$(ARCH)),tiny-qwen2.5-vl,tiny-$(subst _,-,$(ARCH)))

RUN_PY = $(PY)
OFFLINE = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 CUDA_VISIBLE_DEVICES=

.PHONY: help setup stack test test-fast browser demo tiny-model synthetic prepare subsets grounding-data sft export infer score baseline \
        submit-task1 submit-task2 bench bench-prepare clean serve ask recipes curves

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## create .venv with the pinned requirements (GPU set if a GPU is present; DEVICE=cpu|gpu|gpu-next, INSTALLER=uv) + NLTK data
	bash scripts/setup.sh

$(SETUP_STAMP): requirements.txt requirements-cpu.txt requirements-base.txt requirements-dev.txt requirements-gpu.lock \
                requirements-gpu-next.txt scripts/setup.sh
	bash scripts/setup.sh

stack: ## compare PY's packages with the pinned set and import each family's model code (STACK_SET=gpu|cpu|gpu-next)
	$(PY) scripts/check_stack.py --set $(or $(STACK_SET),auto); pins=$$?; \
	  $(PY) scripts/check_stack.py --set $(or $(STACK_SET),auto) --imports && exit $$pins

test: $(STACK) ## run every test (unit + slow end-to-end), as CI does
	$(PY) -m pytest

test-fast: $(STACK) ## run the fast unit tests only
	$(PY) -m pytest -m "not slow"

browser: ## install Debian's chromium (root + apt) for the Subtask 2 report's browser test; CI does it in .ci/run
	bash scripts/install_browser.sh

tiny-model: $(STACK) ## build a tiny random model offline into TINY_MODEL (ARCH=qwen2_5_vl|qwen3_vl|gemma3)
	$(PY) -m training.tiny_model --out $(TINY_MODEL) --arch $(ARCH)

synthetic: $(STACK) ## write a synthetic Kvasir-VQA-x1 copy with known geometry into OUT (default $(DEMO)/synthetic)
	$(PY) -m data_prep.synthetic --out $(or $(OUT),$(DEMO)/synthetic) --images $(or $(IMAGES_N),48) --seed 0 \
	  $(SYNTHETIC_ARGS)

prepare: $(STACK) ## DATASET -> images, augmented variants, splits, organizer subsets, ms-swift JSONL in DATA
	$(PY) -m data_prep.prepare --dataset $(DATASET) $(if $(IMAGES),--images $(IMAGES)) --out $(DATA) \
	  --aug-k $(AUG_K) --augment-impl $(AUGMENT_IMPL) $(PREPARE_ARGS)

subsets: $(STACK) ## write the organizers' task-1/task-2 subsets of DATASET into OUT (no images needed)
	$(PY) -m data_prep.subsets --dataset $(DATASET) --out $(or $(OUT),$(DATA)/subsets)

grounding-data: $(STACK) ## optional: Kvasir-SEG/-Instrument (or SYNTHETIC) boxes -> DATA/swift/grounding.jsonl in ARCH's box format
	$(PY) -m data_prep.grounding_data $(if $(KVASIR_SEG),--kvasir-seg $(KVASIR_SEG)) \
	  $(if $(KVASIR_INSTRUMENT),--kvasir-instrument $(KVASIR_INSTRUMENT)) \
	  $(if $(SYNTHETIC),--synthetic $(SYNTHETIC) --images-of $(DATA)/swift/train-original.meta.jsonl) \
	  --family $(ARCH) --out $(DATA)/swift/grounding.jsonl

recipes: $(STACK) ## list the recipes: model, method, topology, image budget, hardware (from the files)
	$(PY) -m training.recipe

sft: $(STACK) ## fine-tune RECIPE on DATA into RUN (NPROC_PER_NODE/NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT pass through)
	$(PY) -m training.launch --recipe $(RECIPE) --data $(DATA) --run $(RUN) $(if $(MODEL),--model $(MODEL)) \
	  $(if $(RESUME),--resume) $(if $(SFT_ARGS),-- $(SFT_ARGS))

curves: $(STACK) ## redraw RUN/loss_curve.png (train/eval loss, learning rate) from RUN's logs, e.g. while training
	$(PY) -m training.curves --run $(RUN)

export: $(STACK) ## merge RUN's LoRA into RUN/merged, check it answers like the adapter (HUB_MODEL_ID= pushes it)
	$(PY) -m training.export --run $(RUN) --out $(RUN)/merged --check-data $(DATA)/swift/val-original.jsonl \
	  $(if $(HUB_MODEL_ID),--hub-model-id $(HUB_MODEL_ID))

infer: $(STACK) ## answer DATA/swift/SPLIT.jsonl with MODEL (default RUN/merged) into PRED
	$(PY) -m inference.predict --model $(INFER_MODEL) --data $(DATA)/swift/$(SPLIT).jsonl --out $(PRED) \
	  --backend $(BACKEND) --max-new-tokens $(MAX_NEW_TOKENS) $(if $(ADAPTERS),--adapters $(ADAPTERS)) $(INFER_ARGS)

serve: $(STACK) ## OpenAI-compatible endpoint for MODEL (default RUN/merged) at SERVE_HOST:SERVE_PORT (swift deploy)
	$(PY) -m inference.serve --model $(INFER_MODEL) --host $(SERVE_HOST) --port $(SERVE_PORT) --backend $(BACKEND) \
	  $(if $(SERVE_ARGS),-- $(SERVE_ARGS))

# EXPLAIN=1 calibrates the confidence with CALIBRATION when that file exists (`make submit-task2` makes it) or is given
ASK_CALIBRATION = $(if $(and $(CALIBRATION),$(or $(wildcard $(CALIBRATION)),\
  $(filter command line,$(origin CALIBRATION)))),--calibration-data $(CALIBRATION) --calibration-rows $(CALIBRATION_ROWS))
ASK_MODULE = $(if $(EXPLAIN),explain.ask,inference.ask)
ask: $(STACK) ## one answer for IMAGE and question Q from MODEL (or a server at URL); EXPLAIN=1: + its explanation
	$(PY) -m $(ASK_MODULE) --image "$(IMAGE)" --question "$(Q)" $(if $(URL),--url $(URL),--model $(INFER_MODEL) \
	  --backend $(BACKEND)) --max-new-tokens $(MAX_NEW_TOKENS) $(if $(EXPLAIN),$(ASK_CALIBRATION))

score: $(STACK) ## score PRED exactly like the leaderboard (BLEU, ROUGE-1/2/L, METEOR) + a report in REPORT
	$(PY) -m eval.score $(PRED) --report $(REPORT)

baseline: $(STACK) ## language-prior baselines (no image) on SPLIT, scored like a model
	$(PY) -m eval.baseline --train $(DATA)/swift/train-original.meta.jsonl --eval $(DATA)/swift/$(SPLIT).meta.jsonl \
	  --out $(BASELINE_OUT)

submit-task1: $(STACK) ## build, check and upload the Subtask 1 repo for MODEL to HUB_REPO (DRY_RUN=1: no upload)
	$(PY) -m submission.task1 --model $(INFER_MODEL) $(if $(HUB_REPO),--hub-repo $(HUB_REPO)) --name $(NAME) \
	  --team $(TEAM) --build-root $(SUBMISSION_BUILD)/task1 $(if $(SUBMIT_DATASET),--dataset $(SUBMIT_DATASET)) \
	  $(if $(IMAGES),--images $(IMAGES)) --max-new-tokens $(MAX_NEW_TOKENS) $(if $(DRY_RUN),--dry-run) $(if $(SUBMIT),--submit)

# A TASK1_PRED or CALIBRATION given on the command line must exist (submission.task2 says so); the defaults are made
# with `make infer` (same engine and settings as Task 1, with log-probs) when missing.
submit-task2: $(STACK) ## build, validate and upload the Subtask 2 repo (explanations, visuals, confidence; DRY_RUN=1: no upload)
	$(call infer-if-missing,TASK1_PRED,task2_val-original)
	$(call infer-if-missing,CALIBRATION,val-original)
	$(PY) -m submission.task2 --model $(INFER_MODEL) $(if $(HUB_REPO),--hub-repo $(HUB_REPO)) --name $(NAME) \
	  --team $(TEAM) --build-root $(SUBMISSION_BUILD)/task2 $(if $(SUBMIT_DATASET),--dataset $(SUBMIT_DATASET)) \
	  $(if $(IMAGES),--images $(IMAGES)) --answer-tokens $(MAX_NEW_TOKENS) --backend $(BACKEND) \
	  --task1-predictions $(TASK1_PRED) $(if $(CALIBRATION),--calibration-data $(CALIBRATION)) \
	  --calibration-rows $(CALIBRATION_ROWS) $(TASK2_ARGS) $(if $(DRY_RUN),--dry-run) $(if $(SUBMIT),--submit)

# $(call infer-if-missing,VAR,SPLIT): when VAR keeps its default and that file is missing, make it with `make infer`
infer-if-missing = $(if $(filter file,$(origin $(1))),@test -e $($(1)) || { echo "$(1) not given and $($(1)) \
  missing: making it with make infer SPLIT=$(2) INFER_ARGS=--logprobs"; $(MAKE) --no-print-directory infer \
  SPLIT=$(2) PRED=$($(1)) INFER_ARGS="$(INFER_ARGS) --logprobs"; })

demo: $(STACK) ## the whole path offline on CPU: tiny model + synthetic data through every target above
	bash scripts/demo.sh $(DEMO)

bench: $(STACK) ## run the CPU benchmarks (tables printed and written under bench/results/)
	bash scripts/bench.sh

bench-prepare: $(STACK) ## make prepare vs the official README way at full scale (~35 min on 2 cores; BENCH_ARGS="--scale 0.05" for a quick run)
	$(OFFLINE) $(PY) -m bench.prepare_bench $(BENCH_ARGS)

clean: ## remove build outputs (not .venv, data or runs)
	rm -rf build submission/build .pytest_cache
