# needletrack: `make demo` and `make test` are the two commands a newcomer types.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-slow venv clean

# torch: the CPU build (PyTorch's CPU index, else a local CPU wheel pip is configured with; never CUDA
# unless NEEDLETRACK_ALLOW_CUDA_TORCH=1), see scripts/install_torch.py.
$(STAMP): pyproject.toml scripts/install_torch.py
	@test -x $(BIN)/python || { echo "make: creating the virtual environment $(VENV) with $(PY) ..."; $(PY) -m venv $(VENV); }
	@echo "make: upgrading pip in $(VENV) ..."
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python scripts/install_torch.py $(TORCH_PIN)
	@# the distribution was called `needletrack` before it became `needletrack-us`: drop an old install
	@if ls -d $(VENV)/lib/python*/site-packages/needletrack-[0-9]*.dist-info >/dev/null 2>&1; then \
	  echo "make: removing the old 'needletrack' install (now 'needletrack-us') ..."; \
	  $(BIN)/python -m pip uninstall -q -y needletrack; fi
	@rm -rf src/needletrack.egg-info
	@echo "make: installing needletrack (editable) and its dependencies (numpy, scipy, opencv, onnxruntime, av, SimpleITK, ...: about 180 MB to download on a fresh venv) ..."
	$(BIN)/python -m pip install --progress-bar on $(TORCH_PIN) -e ".[test]"
	@touch $(STAMP)
	@echo "make: $(VENV) is ready"

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/needletrack demo

# the fast suite (under 5 minutes on 2 cores); test-slow runs the tests marked slow; CI runs both
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) .pytest_cache
