# Imaging: one calibrated group -> image.fits (flat noise), residual.fits and pb.fits
# (Airy beam averaged over the group's drift) on one grid, and drift_sources.parquet
# (the bright catalog sources fitted with the per-integration beam, subtracted before
# imaging and restored).


from dsa110_contimg.imaging.image import cli_options as image_cli_options

# Deterministic WSClean runs on one thread: claim one core, so that Snakemake images
# several groups at once instead.
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
    output:
        image=f"{RESULTS}/images/{{group}}/image.fits",
        residual=f"{RESULTS}/images/{{group}}/residual.fits",
        pb=f"{RESULTS}/images/{{group}}/pb.fits",
        drift=f"{RESULTS}/images/{{group}}/drift_sources.parquet",
    log:
        f"{RESULTS}/logs/image/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/image/{{group}}.tsv"
    conda:
        "../envs/contimg.yaml"
    threads: IMAGE_THREADS
    resources:
        mem_mb=scaled_by_attempt("image", "mem_mb"),
        runtime=scaled_by_attempt("image", "runtime_min"),
    params:
        out_dir=lambda wc, output: str(Path(output.image).parent),
        cfg=json_config("image"),
        c=config["image"],
        opts=image_cli_options(config["image"], SKY_CATALOG),
    shell:
        "dsa110-contimg image {input.ms:q} --out-dir {params.out_dir:q}"
        " --imager {params.c[imager]} --imsize {params.c[imsize]}"
        " --cell-arcsec {params.c[cell_arcsec]} --weighting {params.c[weighting]}"
        " --robust {params.c[robust]} --niter {params.c[niter]}"
        " --threshold-jy {params.c[threshold_jy]} --nsigma {params.c[nsigma]}"
        " --gain {params.c[gain]} --cyclefactor {params.c[cyclefactor]}"
        " --mgain {params.c[mgain]} --max-major {params.c[max_major]}"
        " --wprojplanes {params.c[wprojplanes]} --threads {threads}"
        "{params.opts} --config-json {params.cfg:q} 2> {log:q}"
