# Two commands from a fresh clone with only python3: `make serve`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config.toml
# Models `make serve` fetches before serving (ids or aliases in $(CONFIG); empty: none).
PULL ?= smollm2

.PHONY: install serve test bench lint fuzz soak

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

# >= 10,000 schemathesis cases over every route, against echo and a tiny MLX model.
fuzz: $(STAMP)
	HF_HUB_OFFLINE=1 FUZZ_EXAMPLES=1500 FUZZ_MLX=1 $(PY) -m pytest -q -s -p no:cacheprovider --timeout=3600 tests/fuzz

# 5,000 mixed requests against MLX test models, then checks that nothing is left behind.
soak: $(STAMP)
	HF_HUB_OFFLINE=1 SOAK_REQUESTS=5000 $(PY) -m pytest -q -s -p no:cacheprovider --timeout=3600 tests/mlx/test_soak.py

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway backends plugins tests bench
