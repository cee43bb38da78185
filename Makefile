# Two commands from a fresh clone with only python3: `make serve`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.toml
# Models `make serve` fetches before serving (ids or aliases in $(CONFIG); empty: none).
PULL ?= smollm2

.PHONY: install serve test bench lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV): installing the gateway and its dependencies (a few minutes the first time)"
	$(PY) -m pip install --progress-bar on --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(if $(PULL),-$(VENV)/bin/gateway pull --config $(CONFIG) $(PULL))
	$(VENV)/bin/gateway serve --config $(CONFIG) $(if $(PORT),--port $(PORT))

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway backends plugins tests bench
