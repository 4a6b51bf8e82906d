# Metrics per method, tables and figures.


rule evaluate:
    input:
        cases=lambda w: [path for case in method_cases(w.method) for path in case],
        labels=[preprocessed(s, "labels") for s in SPLIT.test],
    output:
        "results/metrics/{method}.csv",
    params:
        cases=evaluation_cases,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/evaluate/{method}.log",
    benchmark:
        "benchmarks/evaluate/{method}.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion evaluate --method {wildcards.method} {params.cases} --out {output} > {log} 2>&1"


# How much of the oracle's Dice each source contrast can support from its intensities alone.
rule intensity_bound:
    input:
        [normalised(s, c) for s in SPLIT.test for c in CONTRASTS],
        [preprocessed(s, name) for s in SPLIT.test for name in ("labels", "brainmask")],
    output:
        csv="results/tables/intensity_bound.csv",
        markdown=report("results/tables/intensity_bound.md", caption="../report/intensity_bound.rst", category="Results"),
    params:
        cases=intensity_bound_cases(),
        anatomy=ANATOMY_OPTION,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/intensity_bound.log",
    benchmark:
        "benchmarks/intensity_bound.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion intensity-bound {params.cases} --out {output.csv} --markdown {output.markdown} {params.anatomy} "
        "> {log} 2>&1"


# How well the best voxelwise intensity map of each source could follow the real target, beside the run's
# translations: one that passes it uses more than the source's intensities.
rule intensity_bound_corr:
    input:
        [normalised(s, c) for s in SPLIT.test for c in CONTRASTS],
        [preprocessed(s, "brainmask") for s in SPLIT.test],
        metrics="results/tables/metrics_long.csv",
    output:
        csv="results/tables/intensity_bound_corr.csv",
        markdown=report("results/tables/intensity_bound_corr.md", caption="../report/intensity_bound_corr.rst",
                        category="Results"),
    params:
        cases=intensity_bound_corr_cases(),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/intensity_bound_corr.log",
    benchmark:
        "benchmarks/intensity_bound_corr.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion intensity-bound-corr --metrics {input.metrics} {params.cases} --out {output.csv} "
        "--markdown {output.markdown} > {log} 2>&1"


# Not part of `all`: it trains one more nnU-Net per source contrast. Run `snakemake supervised_bound`.
rule supervised_bound:
    input:
        [path for case in supervised_bound_cases() for path in case[2:]],
        curves=expand("results/nnunet_curves/{name}.csv", name=SUPERVISED_CURVES),
    output:
        csv="results/tables/supervised_bound.csv",
        markdown=report("results/tables/supervised_bound.md", caption="../report/supervised_bound.rst", category="Results"),
    params:
        cases=" ".join(f"--case {' '.join(case)}" for case in supervised_bound_cases()),
        anatomy=ANATOMY_OPTION,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/supervised_bound.log",
    benchmark:
        "benchmarks/supervised_bound.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion dice-table {params.cases} --out {output.csv} --markdown {output.markdown} {params.anatomy} "
        "> {log} 2>&1"


rule tables:
    input:
        metrics=expand("results/metrics/{method}.csv", method=METHODS_RUN),
        curves=expand("results/nnunet_curves/{segmenter}.csv", segmenter=SEGMENTERS_RUN),
    output:
        long="results/tables/metrics_long.csv",
        summary="results/tables/summary.csv",
        markdown=report("results/tables/summary.md", caption="../report/summary.rst", category="Results"),
        verdict=report("results/tables/verdict.md", caption="../report/verdict.rst", category="Results"),
        headline=report("results/tables/headline.md", caption="../report/headline.rst", category="Results"),
        training=report("results/tables/nnunet_training.md", caption="../report/nnunet_training.rst",
                        category="Results"),
    params:
        out_dir=lambda wildcards, output: Path(output.long).parent,
        anatomy=ANATOMY_OPTION,
        curves=lambda wildcards, input: " ".join(f"{Path(p).stem}={p}" for p in input.curves),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/tables.log",
    benchmark:
        "benchmarks/tables.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion tables --metrics {input.metrics} --curves {params.curves} --out-dir {params.out_dir} "
        "{params.anatomy} > {log} 2>&1"


rule figure_dice:
    input:
        "results/tables/metrics_long.csv",
    output:
        report("results/figures/dice.png", caption="../report/dice.rst", category="Results"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/figure_dice.log",
    benchmark:
        "benchmarks/figure_dice.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion figure dice --inputs {input} --out {output} > {log} 2>&1"




rule figure_grid:
    input:
        lambda wildcards: list(grid_items(wildcards).values()),
    output:
        report("results/figures/translation_grid.png", caption="../report/grid.rst", category="Results"),
    params:
        grid=lambda wildcards: " ".join(f"{k}={v}" for k, v in grid_items(wildcards).items()),
        subject=FIGURE_SUBJECT,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        "logs/figure_grid.log",
    benchmark:
        "benchmarks/figure_grid.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion figure grid --subject {params.subject} --inputs {params.grid} --out {output} > {log} 2>&1"


rule figure_sampler:
    input:
        "results/benchmarks/sampling.csv",
    output:
        report("results/figures/sampler_curve.png", caption="../report/sampler.rst", category="Diffusion model"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        "logs/figure_sampler.log",
    benchmark:
        "benchmarks/figure_sampler.tsv"
    conda:
        "../../envs/report.yaml"
    shell:
        "midiffusion figure sampler --inputs {input} --out {output} > {log} 2>&1"
