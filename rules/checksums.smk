# The run's checksum manifest (sha256 of each science product's content, see
# dsa110_contimg.reproducibility), written last so that every run records it;
# `dsa110-contimg compare A B` compares two runs with it.


rule checksums:
    input:
        *RUN_PRODUCTS,
    output:
        f"{RESULTS}/checksums.sha256",
    log:
        f"{RESULTS}/logs/checksums/checksums.log",
    conda:
        "../envs/contimg.yaml"
    # The last job of a run, alone: it hashes the products (80 MSs in the demo) in
    # two processes.
    threads: 2
    params:
        results=lambda wildcards, output: str(Path(output[0]).parent),
    shell:
        "dsa110-contimg checksums {params.results:q} --out {output:q}"
        " --workers {threads} 2> {log:q}"
