# The two commands: `make demo` (the main job on the shipped models) and `make test` (everything).
# Both build a virtual environment at .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# exactly this torch: the CPU build lies on these machines' disks; a bare `torch` pulls CUDA
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[toolchain,test]'
	touch $(STAMP)

# The relay on free local ports with a registered device: OTA call, a stock XiaoZhi text turn,
# a streamed pocketgpt reply, an OpenAI-style call, SIGTERM drain; then a chat on this machine
# (scripted, then interactive when stdin is a terminal).
demo: $(STAMP)
	$(PY) -m pocketgpt.relay.demo --model builtin:host
	$(VENV)/bin/pocketgpt chat builtin:host --demo

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build host/*.egg-info
