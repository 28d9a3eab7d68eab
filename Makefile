# kdlite: one verb per target. `make help` lists them.
PY_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install demo demo-lane-left demo-lane-rest train test test-slow test-gpu gpu-check lint fmt bench report tiny-models clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install kdlite with its dev tools (offline-safe, CPU torch)

demo: $(STAMP) ## the study in miniature on a CPU (~22 min): train, evaluate, report into runs/demo
	# two lanes side by side, one thread each: a tiny model runs nearly as fast on one thread as on
	# two, so on 2 cores this is ~1.7x the throughput of one lane (BENCHMARKS.md, 2026-12-04 10:27)
	$(MAKE) --no-print-directory -j2 demo-lane-left demo-lane-rest
	$(PY) -m kdlite.cli.report runs=runs/demo

# One lane of `make demo`: train its conditions, then evaluate and probe them (docs/mini-replication.md).
DEMO_TRAIN := $(PY) train.py -m experiment=demo trainer.progress_bar=false
DEMO_EVAL := $(PY) evaluate.py bench=synthetic_long out_dir=runs/demo/baseline
DEMO_PROBE := $(PY) -m kdlite.cli.probe out_dir=runs/demo/baseline
demo-lane-left demo-lane-rest: export OMP_NUM_THREADS = 1

demo-lane-left: $(STAMP)
	$(DEMO_TRAIN) lsp=0.25,0.5,1.0
	$(DEMO_EVAL) "model=['runs/demo/lsp=0.25','runs/demo/lsp=0.5','runs/demo/lsp=1.0']"
	$(DEMO_PROBE) "model=['runs/demo/lsp=0.25','runs/demo/lsp=0.5','runs/demo/lsp=1.0']"

demo-lane-rest: $(STAMP)
	# the un-distilled student base and the teacher, then the other conditions
	$(PY) -m kdlite.cli.export out=runs/demo/baseline/tiny-student
	$(PY) -m kdlite.cli.export out=runs/demo/baseline/tiny-teacher role=teacher
	$(DEMO_EVAL) "model=['runs/demo/baseline/tiny-student','runs/demo/baseline/tiny-teacher']"
	$(DEMO_PROBE) "model=['runs/demo/baseline/tiny-student']"
	$(DEMO_TRAIN) crop=right lsp=0.5
	$(DEMO_TRAIN) supervise=cot,a
	$(DEMO_EVAL) "model=['runs/demo/crop=right,lsp=0.5','runs/demo/supervise=cot','runs/demo/supervise=a']"
	$(DEMO_PROBE) "model=['runs/demo/crop=right,lsp=0.5','runs/demo/supervise=cot','runs/demo/supervise=a']"

train: $(STAMP) ## one run on the embedded default: `python train.py` (tiny pair, CPU, ~5 min)
	$(PY) train.py

test: $(STAMP) ## fast CPU test suite (slow and gpu tests deselected)
	$(PY) -m pytest -q

test-slow: $(STAMP) ## also the slow end-to-end tests
	$(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP) ## tests that need a CUDA device
	$(PY) -m pytest -q -m gpu

gpu-check: $(STAMP) ## on a CUDA machine (~12 min): gpu tests, GPU bench, vLLM smoke -> gpu-check.json
	$(PY) -m kdlite.cli.gpu_check out=gpu-check.json

lint: $(STAMP) ## ruff check + format check + mypy on the package
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy kdlite

fmt: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tiny-models: $(STAMP) ## rebuild the shipped tiny pair weights in kdlite/assets (~35 min on 2 cores)
	$(PY) -m kdlite.cli.pretrain shape=tiny-student steps=1600 chat_share=0.3 max_steps=2
	# the shipped teacher base predates the step-by-step solutions in the base corpus
	$(PY) -m kdlite.cli.pretrain shape=tiny-teacher steps=1500 stepwise_share=0
	$(PY) -m kdlite.cli.pretrain stage=reasoning

bench: $(STAMP) ## CPU benchmark of the training step vs the naive reference (appends to BENCHMARKS.md)
	$(PY) -m kdlite.cli.bench

report: $(STAMP) ## tables and plots from a sweep directory (RUNS=runs)
	$(PY) -m kdlite.cli.report runs=$(or $(RUNS),runs)

clean: ## remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache .ruff_cache .mypy_cache
