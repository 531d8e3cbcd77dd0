# Two commands do everything on a fresh machine:
#   make book   set up, execute every notebook (PARAMS=default) and build the site
#   make test   set up, run the whole test suite (library, notebooks with PARAMS=smoke, site, browser)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# --isolated: take torch/torchvision from PyPI, not a machine-local CPU wheel folder whose torch
# does not import with PyPI's torchvision (see README, "Installing").
PIP := $(BIN)/python -m pip --disable-pip-version-check
PIP_FLAGS ?= --isolated
PARAMS ?= default
BUILD ?= _build/$(PARAMS)

.PHONY: setup browser notebooks site book test test-library benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) -q -e ".[book,test,dask]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/python -c "import torch, torchvision, vqlib; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

# Debian's Chromium for the browser test (never `playwright install`: it downloads a browser).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	@chromium --version

# Execute every notebook with papermill into $(BUILD)/src (PARAMS = default | smoke | full | paper).
notebooks: setup
	$(BIN)/python -m book.execute --params $(PARAMS) --out $(BUILD)

# Render the executed notebooks with jupyter-book (which never executes them itself).
site: setup
	$(BIN)/python -m book.build_site --build $(BUILD)

book: notebooks site

# The library's tests: without the built book and without the paper sets' notebook runs (minutes).
test-library: setup
	$(BIN)/python -m pytest -m "not book and not paper_set"

test: setup browser
	$(MAKE) book PARAMS=smoke
	$(BIN)/python -m pytest --book-build=_build/smoke

benchmark: setup
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf _build
