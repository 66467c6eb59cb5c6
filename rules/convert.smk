rule convert:
    """One group's subband files -> one Measurement Set phased to the meridian, flagged
    (bad samples, dead antennas, RFI) before it is renamed into place."""
    input:
        files=group_files,
        # ancient: a new day rewrites the manifest but leaves existing groups up to date.
        manifest=ancient(f"{RESULTS}/manifest/groups.parquet"),
    output:
        ms=directory(f"{RESULTS}/ms/{{group}}.ms"),
        flag_qa=f"{RESULTS}/qa/flag/{{group}}.json",
        flag_png=report(
            f"{RESULTS}/qa/flag/{{group}}.png",
            category="QA",
            subcategory="flagging",
            caption="../report/flagging.rst",
        ),
    log:
        f"{RESULTS}/logs/convert/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{group}}.tsv"
    # On a cluster (profiles/slurm) one sbatch job per group converts it and, for a
    # calibrator group, also solves on it (calibrate_solve is in the same group).
    group:
        "ingest"
    conda:
        "../envs/contimg.yaml"
    threads: config["convert"]["workers"]
    resources:
        mem_mb=scaled_by_attempt("convert", "mem_mb"),
        runtime=scaled_by_attempt("convert", "runtime_min"),
    params:
        writer=config["convert"]["writer"],
        max_width=config["convert"]["max_channel_width_khz"],
        flag=json_config("flag"),
    shell:
        "dsa110-contimg convert {input.files:q} --group {wildcards.group}"
        " --out {output.ms:q} --writer {params.writer} --workers {threads}"
        " --flag-qa-json {output.flag_qa:q} --flag-qa-png {output.flag_png:q}"
        " --flag-config-json {params.flag:q}"
        " --max-channel-width-khz {params.max_width} 2> {log:q}"
