checkpoint manifest:
    """Group the archive's UVH5 files by reading their headers only."""
    input:
        archive_files(),
    output:
        groups=f"{RESULTS}/manifest/groups.parquet",
        rejected=f"{RESULTS}/manifest/rejected.parquet",
    params:
        archive=ARCHIVE,
        tolerance=config["manifest"]["tolerance_s"],
        n_subbands=config["manifest"]["n_subbands"],
        window=" ".join(
            f"--{k} {config[k]}" for k in ("start", "end") if config.get(k)
        ),
    log:
        f"{RESULTS}/logs/manifest/manifest.log",
    conda:
        "../envs/contimg.yaml"
    shell:
        "dsa110-contimg manifest {params.archive:q} --out {output.groups:q}"
        " --rejected {output.rejected:q} --tolerance-s {params.tolerance}"
        " --n-subbands {params.n_subbands} {params.window} 2> {log:q}"
