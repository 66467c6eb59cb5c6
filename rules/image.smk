# Imaging: one calibrated group -> image.fits (flat noise), residual.fits and pb.fits
# (Airy beam averaged over the group's drift) on one grid, and drift_sources.parquet
# (the bright catalog sources fitted with the per-integration beam, subtracted before
# imaging and restored).

from dsa110_contimg.imaging.image import ImagingSettings

# Deterministic WSClean runs single-threaded gridders (image.gridders, default 1, side
# by side while gridding): claim one core, so that Snakemake images several groups at once.
# `--threads` passes the cores the scheduler granted (fewer than image.threads under a
# smaller --cores).
IMAGE_THREADS = (
    1
    if config["image"]["imager"] == "wsclean" and config["image"].get("deterministic")
    else config["image"]["threads"]
)


rule image:
    """WSClean (w-gridder) or tclean (w-projection), chosen by config image.imager."""
    input:
        ms=f"{RESULTS}/ms_cal/{{group}}.ms",
        sky=[SKY_CATALOG] if SKY_CATALOG else [],
        # without a sky catalog the calibrators are the drift model
        calibrators=[] if SKY_CATALOG else [config["calibrate"]["catalog"]],
    output:
        image=f"{RESULTS}/images/{{group}}/image.fits",
        residual=f"{RESULTS}/images/{{group}}/residual.fits",
        pb=f"{RESULTS}/images/{{group}}/pb.fits",
        drift=f"{RESULTS}/images/{{group}}/drift_sources.parquet",
    log:
        f"{RESULTS}/logs/image/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/image/{{group}}.tsv"
    # Cluster job of the group's chain from calibrate_apply (rules/calibrate.smk).
    group:
        "imaging"
    conda:
        "../envs/contimg.yaml"
    threads: IMAGE_THREADS
    resources:
        mem_mb=scaled_by_attempt("image", "mem_mb"),
        runtime=scaled_by_attempt("image", "runtime_min"),
    params:
        out_dir=lambda wc, output: str(Path(output.image).parent),
        cfg=json_config("image", ImagingSettings),
        sky=(
            f"--sky-catalog {shlex.quote(SKY_CATALOG)}"
            if SKY_CATALOG
            else f"--calibrators {shlex.quote(config['calibrate']['catalog'])}"
        ),
    shell:
        "dsa110-contimg image {input.ms:q} --out-dir {params.out_dir:q} {params.sky}"
        " --config-json {params.cfg:q} --threads {threads} 2> {log:q}"
