# Mosaics: primary-beam-weighted linear mosaics of consecutive
# images; images that failed QA are left out (named in the log and the mosaic header).


wildcard_constraints:
    mosaic=GROUP_PATTERN,


rule mosaic:
    """M = sum(P I / s^2) / sum(P^2 / s^2) on a common grid, blank below the weight cut."""
    input:
        unpack(mosaic_members),
    output:
        mosaic=f"{RESULTS}/mosaics/{{mosaic}}/mosaic.fits",
        weight=f"{RESULTS}/mosaics/{{mosaic}}/weight.fits",
    log:
        f"{RESULTS}/logs/mosaic/{{mosaic}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/mosaic/{{mosaic}}.tsv"
    # On a cluster one sbatch job per mosaic makes it, its QA and its photometry
    # (qa_mosaic and photometry_mosaic are in the same group).
    group:
        "mosaic"
    conda:
        "../envs/contimg.yaml"
    resources:
        mem_mb=scaled_by_attempt("mosaic", "mem_mb"),
        runtime=scaled_by_attempt("mosaic", "runtime_min"),
    params:
        weight_cut=config["mosaic"]["weight_cut"],
    shell:
        "dsa110-contimg mosaic --images {input.images:q} --pbs {input.pbs:q}"
        " --residuals {input.residuals:q} --qa {input.qa:q} --out {output.mosaic:q}"
        " --weight {output.weight:q} --weight-cut {params.weight_cut}"
        " --name {wildcards.mosaic} 2> {log:q}"
