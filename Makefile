# Natalia: `make demo` runs the alarm path once; `make test` runs the whole suite.
# Both create .venv and install what they need (including Debian's mosquitto) on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test fuzz lint format bench bench-flood clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/ensure-system-deps
	scripts/ensure-system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/natalia demo

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The long run of the property-based tests of every parser (tests/test_fuzz_*.py): random seeds,
# FUZZ_EXAMPLES cases per property of weight 1, at least 100,000 cases in all (else it fails);
# prints the number of cases per test and in total. A failure prints its reproduction and is
# replayed first next time (.hypothesis/). The normal suite runs the same tests, derandomized.
FUZZ_EXAMPLES ?= 2500
fuzz: setup
	NATALIA_HYPOTHESIS_PROFILE=fuzz NATALIA_HYPOTHESIS_EXAMPLES=$(FUZZ_EXAMPLES) \
	NATALIA_FUZZ_MIN_CASES=100000 $(BIN)/python -m pytest -p tests.support.hypothesis \
	--timeout=3600 --hypothesis-show-statistics tests/test_fuzz_*.py $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python scripts/bench_ingest.py

# A genuine alarm's delay while another account floods the hub, beside this machine's floor.
bench-flood: setup
	$(BIN)/python scripts/bench_flood.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
