# The two commands: `make demo` (the main job on the shipped models) and `make test` (everything).
# Both build a virtual environment at .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-relay flash test lint venv clean xtensa-check firmware

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# exactly this torch: the CPU build lies on these machines' disks; a bare `torch` pulls CUDA
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[toolchain,test,voice,flash,lint]'
	touch $(STAMP)

# The whole system on one machine: the relay (builtin:host) on free local ports, a simulated
# ESP32-S3 (builtin:device) that gets its URL and token through the OTA call, a short scripted
# conversation with local and relay answers, then the device console when stdin is a terminal.
demo: $(STAMP)
	$(VENV)/bin/pocketgpt device --demo

# The relay alone, as stock XiaoZhi and OpenAI clients see it.
demo-relay: $(STAMP)
	$(PY) -m pocketgpt.relay.demo --model builtin:host

# Build (when stale) and flash a connected ESP32-S3: `make flash ARGS="--model builtin:device"`.
flash: $(STAMP)
	$(PY) tools/flash.py $(ARGS)

# The engine on the ESP32-S3 instruction set: builds firmware/xtensa's harness with the toolchain
# cache (tools/esp32s3-toolchain.sh, docs/xtensa.md), runs builtin:device in QEMU's S3 core and
# compares its greedy tokens with the host engine's; COUNT=1 also counts instructions per token.
xtensa-check: $(STAMP)
	$(PY) tools/xtensa_check.py --tokens 40 $(if $(COUNT),--count)

# The real firmware image with ESP-IDF v5.5's CMake build (needs the full toolchain: docs/xtensa.md).
firmware:
	tools/firmware_build.sh

# On every core (pytest-xdist); a file's tests stay together on one worker, so its module fixtures
# (a trained model, a relay) are made once; files go out in conftest.py's order, the slowest first.
# `make test ARGS="-m 'not slow'"` is the quick subset.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder $(ARGS)

# ruff's lint rules and mypy's checks, both configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build host/*.egg-info
