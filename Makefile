# One command each: `make demo` sets up and runs the pipeline on a simulated archive,
# `make test` sets up and runs the test suite (CI runs `make test` via .ci/run).
VENV := .venv/bin
DEMO := demo
export PATH := $(CURDIR)/$(VENV):$(PATH)

.PHONY: setup demo test lint clean-demo

setup:
	./scripts/setup.sh

$(DEMO)/archive/truth/simulation.json: | setup
	$(VENV)/dsa110-contimg simulate --preset demo --out $(DEMO)/archive \
	    --dec-deg 54.5734 --calibrator J0834+555:1 --calibrator-catalog config/calibrators.csv

demo: setup $(DEMO)/archive/truth/simulation.json
	$(VENV)/dsa110-contimg run -- --config archive_dir=$(DEMO)/archive results_dir=$(DEMO)/results

test: setup
	$(VENV)/python -m pytest -q tests

lint: setup
	$(VENV)/snakemake --lint

clean-demo:
	rm -rf $(DEMO)
