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

.PHONY: help install demo replication lane-left lane-rest train test test-slow test-gpu gpu-check lint fmt bench report tiny-models clean

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
	$(MAKE) --no-print-directory -j2 lane-left lane-rest EXP=demo
	$(PY) -m kdlite.cli.report runs=runs/demo

replication: $(STAMP) ## the study in miniature at the teacher's budget (~2 h on 2 cores) into runs/replication
	# the demo's grid on the restate pair, 6,400 steps per condition (conf/experiment/replication.yaml,
	# docs/mini-replication.md §9)
	$(MAKE) --no-print-directory -j2 lane-left lane-rest EXP=replication
	$(PY) -m kdlite.cli.report runs=runs/replication

# The two lanes of `make demo` and `make replication` (EXP=demo|replication): train the conditions,
# then evaluate and probe them (docs/mini-replication.md). The left lane is the longer at E's budget
# (§8: lsp 1.0 ~40 min, 0.5 ~32, 0.25 ~25, right 0.5 ~28 on one thread). Another recipe is another
# experiment config: a train.py override would also rename the run directories evaluated below.
EXP ?= demo
RUNS := runs/$(EXP)
TRAIN := $(PY) train.py -m experiment=$(EXP) trainer.progress_bar=false
EVAL := $(PY) evaluate.py bench=synthetic_long out_dir=$(RUNS)/baseline
PROBE := $(PY) -m kdlite.cli.probe out_dir=$(RUNS)/baseline
# the un-distilled student is probed on traces of its experiment's answer form (a run reads its own)
BASE_FORM := $(if $(filter replication,$(EXP)),restate,chain)
LEFT := '$(RUNS)/lsp=0.25','$(RUNS)/lsp=0.5','$(RUNS)/lsp=1.0'
REST := '$(RUNS)/crop=right,lsp=0.5','$(RUNS)/supervise=cot','$(RUNS)/supervise=a'
lane-left lane-rest: export OMP_NUM_THREADS = 1

lane-left: $(STAMP)
	$(TRAIN) lsp=0.25,0.5,1.0
	$(EVAL) "model=[$(LEFT)]"
	$(PROBE) "model=[$(LEFT)]"

lane-rest: $(STAMP)
	# the un-distilled student base and the teacher, then the other conditions
	$(PY) -m kdlite.cli.export out=$(RUNS)/baseline/tiny-student experiment=$(EXP)
	$(PY) -m kdlite.cli.export out=$(RUNS)/baseline/tiny-teacher role=teacher experiment=$(EXP)
	$(EVAL) "model=['$(RUNS)/baseline/tiny-student','$(RUNS)/baseline/tiny-teacher']"
	$(PROBE) "model=['$(RUNS)/baseline/tiny-student']" answer_form=$(BASE_FORM)
	$(TRAIN) crop=right lsp=0.5
	$(TRAIN) supervise=cot,a
	$(EVAL) "model=[$(REST)]"
	$(PROBE) "model=[$(REST)]"

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

tiny-models: $(STAMP) ## rebuild the shipped tiny pairs' weights in kdlite/assets (~65 min on 2 cores)
	$(PY) -m kdlite.cli.pretrain shape=tiny-student steps=1600 chat_share=0.3 max_steps=2
	# the shipped teacher base predates the step-by-step solutions in the base corpus
	$(PY) -m kdlite.cli.pretrain shape=tiny-teacher steps=1500 stepwise_share=0
	$(PY) -m kdlite.cli.pretrain stage=reasoning
	# the restate pair of `make replication` (docs/mini-replication.md §8-9), ~30 min more
	$(PY) -m kdlite.cli.pretrain shape=tiny-student steps=1600 chat_share=0.3 max_steps=2 check_share=0.5 answer_form=restate
	$(PY) -m kdlite.cli.pretrain stage=reasoning answer_form=restate

bench: $(STAMP) ## CPU benchmark of the training step vs the naive reference (appends to BENCHMARKS.md)
	$(PY) -m kdlite.cli.bench

report: $(STAMP) ## tables and plots from a sweep directory (RUNS=runs)
	$(PY) -m kdlite.cli.report runs=$(or $(RUNS),runs)

clean: ## remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache .ruff_cache .mypy_cache
