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
	    --calibrator J0834+555:0 --calibrator-catalog config/calibrators.csv

demo: setup $(DEMO)/archive/truth/simulation.json
	start=$$(date +%s); $(VENV)/dsa110-contimg run -- --configfile config/demo.yaml \
	    --config archive_dir=$(DEMO)/archive results_dir=$(DEMO)/results; status=$$?; \
	    echo "demo: pipeline wall time $$(( $$(date +%s) - start )) s"; exit $$status
	$(VENV)/dsa110-contimg summary $(DEMO)/results --archive $(DEMO)/archive \
	    --json $(DEMO)/results/summary.json

test: setup
	$(VENV)/python -m pytest -q tests

lint: setup
	$(VENV)/snakemake --lint

clean-demo:
	rm -rf $(DEMO)
