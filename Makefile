# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned to the CPU wheel this machine carries; an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## Fit a VAE on the bundled digits data and print held-out bits/dim.
demo: $(STAMP)
	$(VENV)/bin/vi-models fit vae --data digits --out runs/demo-vae --epochs $${EPOCHS:-150} --overwrite
	$(VENV)/bin/vi-models evaluate runs/demo-vae
	$(VENV)/bin/vi-models sample runs/demo-vae -n 64 --out runs/demo-vae/samples.png

## Check the import layers (import-linter contracts in pyproject.toml), then run the whole test
## suite (shrinks tutorial sizes when CI is set).
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
