# `make run` and `make test` do all set-up on a fresh machine.
# CPU machine: a .venv with torch==2.13.0 (the local CPU build) and Triton from PyPI; kernels
# then run through Triton's interpreter in the tests.
# GPU machine (PyTorch + Triton preinstalled, no package registry): a .venv on top of the
# system packages, tritonnet installed into it without dependencies. There python3 may itself
# be a venv, whose packages --system-site-packages does not reach (it reaches the base
# interpreter's), so a .pth file adds python3's own site-packages to the new .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tritonnet-installed
PYTEST_ARGS ?= -n auto

.PHONY: run test test-gpu lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch, triton; assert torch.cuda.is_available()" >/dev/null 2>&1; then \
		echo "setup: CUDA PyTorch and Triton found; reusing the installed ones"; \
		$(PYTHON) -m venv --system-site-packages $(VENV) && \
		$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > $(VENV)/.purelib && \
		$(PYTHON) -c "import site; print(chr(10).join(site.getsitepackages()))" \
			> "$$(cat $(VENV)/.purelib)/_host_site.pth" && \
		$(PY) -m pip install -q --no-deps --no-build-isolation -e . ; \
	else \
		echo "setup: no CUDA; CPU build of torch, Triton from PyPI"; \
		test -x $(PY) || $(PYTHON) -m venv $(VENV); \
		$(PY) -m pip install -q --upgrade pip && \
		$(PY) -m pip install -q torch==2.13.0 && \
		$(PY) -m pip install -q -e '.[dev]' ; \
	fi
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tritonnet train

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# the GPU-marked tests alone (they skip without CUDA)
test-gpu: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m gpu

lint: $(STAMP)
	$(PY) -m ruff check tritonnet kernels bench tests

clean:
	rm -rf $(VENV) build *.egg-info runs
