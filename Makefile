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
# ---- training -----------------------------------------------------------------------------------------------------
RECIPE  ?= recipes/qwen2_5_vl/7B_lora.args
RUN     ?= runs/$(basename $(notdir $(RECIPE)))
MODEL   ?=#                             sft: override the recipe's base model; infer/submit: the model to run (default $(RUN)/merged)
RESUME  ?=#                             RESUME=1 continues `make sft` from the latest checkpoint in $(RUN)
SFT_ARGS ?=#                            extra ms-swift flags appended last (they win)
HUB_MODEL_ID ?=#                        `make export` pushes the merged model here when a hub token is present
# ---- inference and scoring ----------------------------------------------------------------------------------------
SPLIT   ?= task1_public-original#       <split>-<setting>: split in train val test task1_public task2_val; setting original augmented
INFER_MODEL = $(if $(MODEL),$(MODEL),$(RUN)/merged)
PRED    ?= preds/$(notdir $(RUN))/$(SPLIT).jsonl
BACKEND ?= auto#                        auto = vLLM when installed and a GPU is visible, else ms-swift transformers
MAX_NEW_TOKENS ?= 64#                   answer length cap, shared by infer and both submissions (answers must agree)
INFER_ARGS ?=#                          e.g. --batch-size 32 --logprobs
REPORT  ?= $(basename $(PRED))-report
# ---- submission ---------------------------------------------------------------------------------------------------
HUB_REPO ?=#                            user/name of the Hugging Face model repo the organizers will run
TEAM    ?= submission/team.json#        team details (copy submission/team.example.json and fill it in)
NAME    ?= $(notdir $(RUN))
SUBMIT  ?=#                             SUBMIT=1: also call `medvqa validate_and_submit` (asks for confirmation)
DRY_RUN ?=#                             DRY_RUN=1: build + check offline, never upload
SUBMIT_DATASET ?=#                      local copy for the offline dry run of the generated script
SUBMISSION_BUILD ?= submission/build#   where the hub-ready folders are built (task1/<NAME>, task2/<NAME>)
TASK1_PRED ?= preds/$(notdir $(RUN))/task2_val-original.jsonl# task-1 answers on the task-2 val set (make infer SPLIT=task2_val-original)
CALIBRATION ?= $(DATA)/swift/val-original.jsonl# labelled held-out split for confidence calibration (predictions or ms-swift JSONL)
TASK2_ARGS ?=#                          e.g. --grid 8 --calibration-method isotonic
# ---- demo (offline, CPU) ------------------------------------------------------------------------------------------
DEMO    ?= build/demo
ARCH    ?= qwen2_5_vl#                  model family of `tiny-model` and `grounding-data`: qwen2_5_vl, qwen3_vl, gemma3
TINY_MODEL ?= models/$(if $(filter qwen2_5_vl,$(ARCH)),tiny-qwen2.5-vl,tiny-$(subst _,-,$(ARCH)))

RUN_PY = $(PY)
OFFLINE = HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MODELSCOPE_OFFLINE=1 CUDA_VISIBLE_DEVICES=

.PHONY: help setup stack test test-fast demo tiny-model synthetic prepare subsets grounding-data sft export infer score baseline \
        submit-task1 submit-task2 bench bench-prepare clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## create .venv with the pinned requirements (GPU set if a GPU is present; DEVICE=cpu|gpu|gpu-next, INSTALLER=uv) + NLTK data
	bash scripts/setup.sh

$(SETUP_STAMP): requirements.txt requirements-cpu.txt requirements-base.txt requirements-dev.txt requirements-gpu.lock \
                requirements-gpu-next.txt scripts/setup.sh
	bash scripts/setup.sh

stack: ## compare PY's installed packages with the pinned set (STACK_SET=gpu|cpu|gpu-next; useful with SETUP=none)
	$(PY) scripts/check_stack.py --set $(or $(STACK_SET),auto)

test: $(STACK) ## run every test (unit + slow end-to-end), as CI does
	$(PY) -m pytest

test-fast: $(STACK) ## run the fast unit tests only
	$(PY) -m pytest -m "not slow"

tiny-model: $(STACK) ## build a tiny random model offline into TINY_MODEL (ARCH=qwen2_5_vl|qwen3_vl|gemma3)
	$(PY) -m training.tiny_model --out $(TINY_MODEL) --arch $(ARCH)

synthetic: $(STACK) ## write a synthetic Kvasir-VQA-x1 copy with known geometry into OUT (default $(DEMO)/synthetic)
	$(PY) -m data_prep.synthetic --out $(or $(OUT),$(DEMO)/synthetic) --images $(or $(IMAGES_N),48) --seed 0

prepare: $(STACK) ## DATASET -> images, augmented variants, splits, organizer subsets, ms-swift JSONL in DATA
	$(PY) -m data_prep.prepare --dataset $(DATASET) $(if $(IMAGES),--images $(IMAGES)) --out $(DATA) \
	  --aug-k $(AUG_K) --augment-impl $(AUGMENT_IMPL) $(PREPARE_ARGS)

subsets: $(STACK) ## write the organizers' task-1/task-2 subsets of DATASET into OUT (no images needed)
	$(PY) -m data_prep.subsets --dataset $(DATASET) --out $(or $(OUT),$(DATA)/subsets)

grounding-data: $(STACK) ## optional: Kvasir-SEG/-Instrument boxes -> DATA/swift/grounding.jsonl in ARCH's box format
	$(PY) -m data_prep.grounding_data $(if $(KVASIR_SEG),--kvasir-seg $(KVASIR_SEG)) \
	  $(if $(KVASIR_INSTRUMENT),--kvasir-instrument $(KVASIR_INSTRUMENT)) --family $(ARCH) --out $(DATA)/swift/grounding.jsonl

sft: $(STACK) ## fine-tune RECIPE on DATA into RUN (NPROC_PER_NODE/NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT pass through)
	$(PY) -m training.launch --recipe $(RECIPE) --data $(DATA) --run $(RUN) $(if $(MODEL),--model $(MODEL)) \
	  $(if $(RESUME),--resume) $(if $(SFT_ARGS),-- $(SFT_ARGS))

export: $(STACK) ## merge RUN's LoRA into RUN/merged, check it answers like the adapter (HUB_MODEL_ID= pushes it)
	$(PY) -m training.export --run $(RUN) --out $(RUN)/merged --check-data $(DATA)/swift/val-original.jsonl \
	  $(if $(HUB_MODEL_ID),--hub-model-id $(HUB_MODEL_ID))

infer: $(STACK) ## answer DATA/swift/SPLIT.jsonl with MODEL (default RUN/merged) into PRED
	$(PY) -m inference.predict --model $(INFER_MODEL) --data $(DATA)/swift/$(SPLIT).jsonl --out $(PRED) \
	  --backend $(BACKEND) --max-new-tokens $(MAX_NEW_TOKENS) $(INFER_ARGS)

score: $(STACK) ## score PRED exactly like the leaderboard (BLEU, ROUGE-1/2/L, METEOR) + a report in REPORT
	$(PY) -m eval.score $(PRED) --report $(REPORT)

baseline: $(STACK) ## language-prior baselines (no image) on SPLIT, scored like a model
	$(PY) -m eval.baseline --train $(DATA)/swift/train-original.meta.jsonl --eval $(DATA)/swift/$(SPLIT).meta.jsonl \
	  --out preds/baseline

submit-task1: $(STACK) ## build, check and (with a token) upload the Subtask 1 repo for MODEL to HUB_REPO
	$(PY) -m submission.task1 --model $(INFER_MODEL) $(if $(HUB_REPO),--hub-repo $(HUB_REPO)) --name $(NAME) \
	  --team $(TEAM) --build-root $(SUBMISSION_BUILD)/task1 $(if $(SUBMIT_DATASET),--dataset $(SUBMIT_DATASET)) \
	  $(if $(IMAGES),--images $(IMAGES)) --max-new-tokens $(MAX_NEW_TOKENS) $(if $(DRY_RUN),--dry-run) $(if $(SUBMIT),--submit)

submit-task2: $(STACK) ## build, validate and (with a token) upload the Subtask 2 repo (explanations, visuals, confidence)
	$(PY) -m submission.task2 --model $(INFER_MODEL) $(if $(HUB_REPO),--hub-repo $(HUB_REPO)) --name $(NAME) \
	  --team $(TEAM) --build-root $(SUBMISSION_BUILD)/task2 $(if $(SUBMIT_DATASET),--dataset $(SUBMIT_DATASET)) \
	  $(if $(IMAGES),--images $(IMAGES)) --answer-tokens $(MAX_NEW_TOKENS) \
	  $(if $(wildcard $(TASK1_PRED)),--task1-predictions $(TASK1_PRED)) --calibration-data $(CALIBRATION) \
	  $(TASK2_ARGS) $(if $(DRY_RUN),--dry-run) $(if $(SUBMIT),--submit)

demo: $(STACK) ## the whole path offline on CPU: tiny model + synthetic data through every target above
	bash scripts/demo.sh $(DEMO)

bench: $(STACK) ## run the CPU benchmarks (tables printed and written under bench/results/)
	bash scripts/bench.sh

bench-prepare: $(STACK) ## make prepare vs the official README way at full scale (~35 min on 2 cores; BENCH_ARGS="--scale 0.05" for a quick run)
	$(OFFLINE) $(PY) -m bench.prepare_bench $(BENCH_ARGS)

clean: ## remove build outputs (not .venv, data or runs)
	rm -rf build submission/build .pytest_cache
