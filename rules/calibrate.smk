# Calibration: solve on calibrator transits, choose a calibrator
# group for every group, apply into results/ms_cal/{group}.ms. Which groups are
# calibrator groups is known after the manifest checkpoint; which tables each group
# uses after the calibration_selection checkpoint.

from dsa110_contimg.calibration.solve import SolveSettings


wildcard_constraints:
    calgroup=GROUP_PATTERN,


rule calibrate_solve:
    """Bandpass and gains on one calibrator group; a failed solve fails its QA only."""
    input:
        ms=f"{RESULTS}/ms/{{calgroup}}.ms",
        # ancient: a new day rewrites the manifest but leaves existing solves up to date.
        manifest=ancient(f"{RESULTS}/manifest/groups.parquet"),
        catalog=config["calibrate"]["catalog"],
        sky=[SKY_CATALOG] if SKY_CATALOG else [],
    output:
        cal=directory(f"{RESULTS}/cal/{{calgroup}}"),
        qa=f"{RESULTS}/qa/cal/{{calgroup}}.json",
        png=f"{RESULTS}/qa/cal/{{calgroup}}.png",
    log:
        f"{RESULTS}/logs/calibrate_solve/{{calgroup}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/calibrate_solve/{{calgroup}}.tsv"
    # In the same cluster job as its group's conversion (see rule convert).
    group:
        "ingest"
    conda:
        "../envs/contimg.yaml"
    resources:
        mem_mb=scaled_by_attempt("calibrate", "mem_mb"),
        runtime=scaled_by_attempt("calibrate", "runtime_min"),
    params:
        cfg=json_config("calibrate", SolveSettings),
        sky=f"--sky-model {shlex.quote(SKY_CATALOG)}" if SKY_CATALOG else "",
    shell:
        "dsa110-contimg calibrate-solve {input.ms:q} --manifest {input.manifest:q}"
        " --catalog {input.catalog:q} --group {wildcards.calgroup} --out {output.cal:q}"
        " --qa-json {output.qa:q} --qa-png {output.png:q} {params.sky}"
        " --config-json {params.cfg:q} 2> {log:q}"


checkpoint calibration_selection:
    """Nearest calibrator group that passed QA, within the validity window, per group."""
    input:
        manifest=f"{RESULTS}/manifest/groups.parquet",
        qa=calibrator_qa_files,
    output:
        selection=f"{RESULTS}/cal/selection.parquet",
        report=f"{RESULTS}/cal/no_calibrator.txt",
    log:
        f"{RESULTS}/logs/calibration_selection/selection.log",
    conda:
        "../envs/contimg.yaml"
    params:
        validity_hours=config["calibrate"]["validity_hours"],
        fallback=config["calibrate"]["fallback"],
    script:
        "../scripts/calibrate_select.py"


rule calibrate_apply:
    """results/ms_cal/{group}.ms with CORRECTED_DATA (or the marked uncalibrated fallback)."""
    input:
        ms=f"{RESULTS}/ms/{{group}}.ms",
        # ancient: a new day rewrites the selection; a group is re-applied only when its
        # calibrator group (the `cal` input) changes or that group's tables are re-solved.
        selection=ancient(f"{RESULTS}/cal/selection.parquet"),
        cal=calibration_for_group,
    output:
        ms=directory(f"{RESULTS}/ms_cal/{{group}}.ms"),
        qa=f"{RESULTS}/qa/apply/{{group}}.json",
    log:
        f"{RESULTS}/logs/calibrate_apply/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/calibrate_apply/{{group}}.tsv"
    # On a cluster one sbatch job per group runs apply -> image -> qa_image ->
    # photometry_image. The group's conversion is a separate job (group "ingest"): the
    # apply waits for the calibration_selection checkpoint, which waits for every
    # calibrator group's solve, so one job from conversion to photometry would depend on
    # jobs outside it that depend on it.
    group:
        "imaging"
    conda:
        "../envs/contimg.yaml"
    resources:
        mem_mb=scaled_by_attempt("calibrate", "mem_mb"),
        runtime=scaled_by_attempt("calibrate", "runtime_min"),
    params:
        interp=config["calibrate"]["interp"],
    script:
        "../scripts/calibrate_apply.py"
