# transformer-ablations: `make quick` (the six-question suite on this CPU) and `make test`.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# CPU wheel pin for laptops and CI; on a GPU machine: make install TORCH='torch==2.13.0' (a CUDA build)
TORCH    ?= torch==2.13.0
STAMP    := $(VENV)/.installed
Q        ?= q1
SCALE    ?= quick
WORKERS  ?=
TASKS    ?= 4
TEST_WORKERS ?= 2
COUNT    ?=
GPUS     ?=
EXP      ?= q1_scaling
ARGS     ?=
CKPT     ?=
SWEEP    ?=
# make real: local copies of Tiny Shakespeare (a .txt) and GLUE SST-2 (a folder with train.tsv, dev.tsv);
# empty: the hf: copies on the Hugging Face hub (data/real_sources.py)
TEXT     ?=
SST2     ?=
ifneq ($(TEXT),)
export ABLATE_TEXT := $(TEXT)
endif
ifneq ($(SST2),)
export ABLATE_SST2 := $(SST2)
endif
export OMP_NUM_THREADS ?= 1
export PYTHONWARNINGS ?= ignore

.PHONY: help install test quick real train finetune sweep agents slurm sync views report bench lint clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package (torch pinned by TORCH=)

test: $(STAMP)  ## run the test suite (what CI runs), TEST_WORKERS=2 processes (pytest-xdist; 0 = one process)
	$(BIN)/python -m pytest -x -p no:cacheprovider -n $(TEST_WORKERS)

quick: $(STAMP)  ## all six questions at quick scale, offline, then reports/quick/
	@# the benchmark's compiles run at the lowest CPU priority beside the sweeps (in the cycles their
	@# workers leave idle), so the timed benchmark after them starts with inductor's cache warm
	nice -n 19 $(BIN)/python -m transformer_ablations.bench.attention_cost --compile-only --quiet & warm=$$!; \
	trap 'kill $$warm 2>/dev/null' INT TERM; \
	$(BIN)/ablate sweep all --scale quick --offline --workers $(or $(WORKERS),2); status=$$?; \
	[ $$status -eq 0 ] || kill $$warm 2>/dev/null; wait $$warm; exit $$status
	$(BIN)/python -m transformer_ablations.bench.attention_cost --out runs/quick/q4_attention_cost.json
	$(BIN)/ablate report --suite quick

real: $(STAMP)  ## real-text suite (Tiny Shakespeare, SST-2; wandb offline): make real [TEXT=file.txt SST2=dir] -> reports/real/
	$(BIN)/ablate sweep real --scale real --offline --workers $(or $(WORKERS),2)
	$(BIN)/ablate report --suite real

train: $(STAMP)  ## one run: make train EXP=q1_scaling SCALE=smoke ARGS='--model.attention.scaling=none'
	$(BIN)/ablate fit --config experiments/$(EXP).yaml --scale $(SCALE) $(ARGS)

finetune: $(STAMP)  ## fine-tune a checkpoint: make finetune CKPT=runs/.../s0-abc ARGS='--data.task=pair'
	$(BIN)/ablate finetune --config experiments/q5_finetune.yaml --scale $(SCALE) --pretrained $(CKPT) $(ARGS)

sweep: $(STAMP)  ## one question's sweep: make sweep Q=q1|q5|all [SCALE=quick|full] [GPUS=0,1] [WORKERS=N]
	$(BIN)/ablate sweep $(Q) --scale $(SCALE) $(if $(GPUS),--gpus $(GPUS)) $(if $(WORKERS),--workers $(WORKERS))

agents: $(STAMP)  ## join an online sweep from this node: make agents SWEEP=entity/project/id GPUS=0,1
	$(BIN)/ablate agents $(SWEEP) $(if $(GPUS),--gpus $(GPUS))

slurm: $(STAMP)  ## SLURM array of agents: make slurm SWEEP=entity/project/id TASKS=8 [COUNT=3]
	$(BIN)/ablate slurm $(SWEEP) --tasks $(TASKS) $(if $(COUNT),--count $(COUNT)) --out runs/slurm_agent.sbatch

sync: $(STAMP)  ## upload offline wandb runs
	$(BIN)/ablate sync

views: $(STAMP)  ## saved wandb views (a report) for a question, logged in: make views Q=q1|all [SCALE=quick]
	$(BIN)/ablate views $(Q) --scale $(SCALE)

report: $(STAMP)  ## rebuild reports/$(SCALE)/ from runs/$(SCALE)/
	$(BIN)/ablate report --suite $(SCALE)

bench: $(STAMP)  ## benchmarks (throughput vs transformers, attention cost, overheads)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests benchmarks

clean:  ## remove caches, runs and reports (keeps .venv)
	rm -rf .cache runs reports .pytest_cache .ruff_cache
