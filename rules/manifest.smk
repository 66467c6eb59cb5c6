checkpoint manifest:
    """Group the archive's UVH5 files by reading their headers only. The files are not
    listed as inputs (a month is ~134,000 files); the archive's state is a parameter."""
    input:
        calibrators=config["calibrate"]["catalog"],
    output:
        groups=f"{RESULTS}/manifest/groups.parquet",
        rejected=f"{RESULTS}/manifest/rejected.parquet",
        pointings=f"{RESULTS}/manifest/pointings.parquet",
    log:
        f"{RESULTS}/logs/manifest/manifest.log",
    conda:
        "../envs/contimg.yaml"
    params:
        archive=ARCHIVE,
        archive_state=raw_archive_state,
        tolerance=config["manifest"]["tolerance_s"],
        n_subbands=config["manifest"]["n_subbands"],
        start=config.get("start"),
        end=config.get("end"),
        beam_fraction=config["calibrate"]["beam_fraction"],
    script:
        "../scripts/manifest.py"
