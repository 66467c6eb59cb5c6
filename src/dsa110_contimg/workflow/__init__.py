"""Running the Snakemake workflow: the runner, fault injection and the archive timeline."""
