# One command each: `make demo` sets up and runs the pipeline on a simulated archive,
# `make test` sets up and runs the test suite.
VENV := .venv/bin
DEMO := demo

.PHONY: setup demo test lint clean-demo

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/dsa110-contimg simulate --preset demo --out $(DEMO)/archive
	PATH=$(CURDIR)/$(VENV):$$PATH $(VENV)/snakemake --profile profiles/local \
	    --config archive_dir=$(DEMO)/archive results_dir=$(DEMO)/results

test: setup
	PATH=$(CURDIR)/$(VENV):$$PATH $(VENV)/python -m pytest -q tests

lint: setup
	$(VENV)/snakemake --lint

clean-demo:
	rm -rf $(DEMO)
