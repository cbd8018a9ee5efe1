# Two commands set everything up: `make train` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
TASK ?= dmc_walker_walk
LOGDIR ?= ./logdir/$(TASK)
ARGS ?=
export MUJOCO_GL ?= egl

.PHONY: train test lint dmlab clean-venv

# Rebuilt whenever requirements.txt changes.
$(VENV)/.installed: requirements.txt
	@ldconfig -p | grep -q libEGL.so.1 || { \
	  echo "Installing Mesa's EGL for headless rendering (apt-get)."; \
	  apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/python dreamer.py --logdir $(LOGDIR) --task $(TASK) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n 2 --dist worksteal tests

# DeepMind Lab's Python module, built from source with Bazel (dmlab/build.sh; about 7 minutes
# on 2 cores). DMLAB_SRC=/path/to/lab names the source; without it the script clones one.
dmlab: $(VENV)/.installed
	dmlab/build.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
