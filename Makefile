# One command each: `make demo` sets up and runs the pipeline on a simulated archive,
# `make test` sets up, lints (`make lint`) and runs the test suite (CI runs `make test`
# via .ci/run).
VENV := .venv/bin
DEMO := demo
export PATH := $(CURDIR)/$(VENV):$(PATH)

.PHONY: setup demo test lint clean-demo

setup:
	./scripts/setup.sh

$(DEMO)/archive/truth/simulation.json: | setup
	$(VENV)/dsa110-contimg simulate --preset demo --out $(DEMO)/archive --workers 2 \
	    --calibrator J0834+555:0 --calibrator-catalog config/calibrators.csv

demo: setup $(DEMO)/archive/truth/simulation.json
	start=$$(date +%s); $(VENV)/dsa110-contimg run -- --configfile config/demo.yaml \
	    --config archive_dir=$(DEMO)/archive results_dir=$(DEMO)/results; status=$$?; \
	    echo "demo: pipeline wall time $$(( $$(date +%s) - start )) s"; exit $$status
	$(VENV)/dsa110-contimg summary $(DEMO)/results --archive $(DEMO)/archive \
	    --json $(DEMO)/results/summary.json

test: lint
	$(VENV)/python -m pytest -q tests

# Style, errors and repeated code: ruff (rules in pyproject.toml), snakefmt, Snakemake's own
# lint, and no block of 6 or more lines repeated anywhere in the Python code.
PY_DIRS := src tests benchmarks scripts .ci
lint: setup
	$(VENV)/ruff check $(PY_DIRS)
	$(VENV)/ruff format --check $(PY_DIRS)
	$(VENV)/snakefmt --check Snakefile rules
	$(VENV)/snakemake --lint
	$(VENV)/python .ci/check_duplicates.py $(PY_DIRS) Snakefile rules

clean-demo:
	rm -rf $(DEMO)
