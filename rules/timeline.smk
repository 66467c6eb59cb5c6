rule qa_manifest:
    """Timeline of groups x subbands (used, quarantined, rejected, missing) for the report."""
    input:
        groups=f"{RESULTS}/manifest/groups.parquet",
        rejected=f"{RESULTS}/manifest/rejected.parquet",
    output:
        png=report(
            f"{RESULTS}/qa/manifest/timeline.png",
            caption="../report/manifest_timeline.rst",
            category="QA",
            subcategory="manifest",
        ),
        json=f"{RESULTS}/qa/manifest/summary.json",
    log:
        f"{RESULTS}/logs/qa_manifest/qa_manifest.log",
    conda:
        "../envs/contimg.yaml"
    params:
        n_subbands=config["manifest"]["n_subbands"],
        quarantine=sorted(QUARANTINE),
    shell:
        "dsa110-contimg qa-manifest {input.groups:q} {input.rejected:q} --png {output.png:q}"
        " --json {output.json:q} --n-subbands {params.n_subbands}"
        " --quarantine {params.quarantine} 2> {log:q}"
