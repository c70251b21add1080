# transformer-ablations: `make quick` (the six-question suite on this CPU) and `make test`.
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# CPU wheel pin for laptops and CI; on a GPU machine: make install TORCH='torch==2.13.0' (a CUDA build)
TORCH    ?= torch==2.13.0
STAMP    := $(VENV)/.installed
Q        ?= q1
SCALE    ?= quick
WORKERS  ?= 2
GPUS     ?=
EXP      ?= q1_scaling
ARGS     ?=
CKPT     ?=
SWEEP    ?=
export OMP_NUM_THREADS ?= 1
export PYTHONWARNINGS ?= ignore

.PHONY: help install test quick train finetune sweep agents sync report bench lint clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package (torch pinned by TORCH=)

test: $(STAMP)  ## run the test suite (what CI runs)
	$(BIN)/python -m pytest -x -q -p no:cacheprovider

quick: $(STAMP)  ## all six questions at quick scale, offline, then reports/quick/
	$(BIN)/ablate sweep sweeps/q1_scaling.yaml sweeps/q2_positional.yaml sweeps/q3_attention.yaml \
	  sweeps/q4_additive.yaml sweeps/q5_pretrain.yaml sweeps/q5_finetune.yaml sweeps/q6_cls_sep.yaml \
	  --scale quick --workers $(WORKERS)
	$(BIN)/ablate report --suite quick

train: $(STAMP)  ## one run: make train EXP=q1_scaling SCALE=smoke ARGS='--model.attention.scaling=none'
	$(BIN)/ablate fit --config experiments/$(EXP).yaml --scale $(SCALE) $(ARGS)

finetune: $(STAMP)  ## fine-tune a checkpoint: make finetune CKPT=runs/.../s0-abc ARGS='--data.task=pair'
	$(BIN)/ablate finetune --config experiments/q5_finetune.yaml --scale $(SCALE) --pretrained $(CKPT) $(ARGS)

sweep: $(STAMP)  ## one question's sweep: make sweep Q=q1 [SCALE=quick|full] [GPUS=0,1] [WORKERS=2]
	$(BIN)/ablate sweep $(wildcard sweeps/$(Q)_*.yaml) --scale $(SCALE) --workers $(WORKERS) $(if $(GPUS),--gpus $(GPUS))

agents: $(STAMP)  ## join an online sweep from this node: make agents SWEEP=entity/project/id GPUS=0,1
	$(BIN)/ablate agents $(SWEEP) $(if $(GPUS),--gpus $(GPUS))

sync: $(STAMP)  ## upload offline wandb runs
	$(BIN)/ablate sync

report: $(STAMP)  ## rebuild reports/$(SCALE)/ from runs/$(SCALE)/
	$(BIN)/ablate report --suite $(SCALE)

bench: $(STAMP)  ## benchmarks (throughput vs transformers, attention cost, overheads)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check src tests benchmarks

clean:  ## remove caches, runs and reports (keeps .venv)
	rm -rf .cache runs reports .pytest_cache .ruff_cache
