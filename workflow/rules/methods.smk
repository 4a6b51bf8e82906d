# One volume per method, test subject and source contrast, on the target grid, normalised to [-1, 1].


rule translate:
    input:
        model="results/diffusion/model.pt",
        source=f"{PRE}/{{source}}_norm.nii.gz",
        mask=f"{PRE}/brainmask.nii.gz",
    output:
        image="results/methods/{method}/sub-{subject}_{source}.nii.gz",
        std="results/methods/{method}/sub-{subject}_{source}_sd.nii.gz",
    wildcard_constraints:
        method="|".join(DIFFUSION_METHODS),
    params:
        options=json_option("sampling"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    log:
        "logs/translate/{method}/sub-{subject}_{source}.log",
    benchmark:
        "benchmarks/translate/{method}/sub-{subject}_{source}.tsv"
    conda:
        "../../envs/diffusion.yaml"
    shell:
        "OMP_NUM_THREADS={threads} midiffusion translate --method {wildcards.method} --model {input.model} --source {input.source} "
        "--mask {input.mask} --out {output.image} --std {output.std} --options {params.options:q} > {log} 2>&1"


rule baseline:
    input:
        source=f"{PRE}/{{source}}_norm.nii.gz",
        target=f"{PRE}/{TARGET}_norm.nii.gz",
        mask=f"{PRE}/brainmask.nii.gz",
        references=expand(f"{PRE}/{TARGET}_norm.nii.gz", subject=SPLIT.train),
        reference_masks=expand(f"{PRE}/brainmask.nii.gz", subject=SPLIT.train),
    output:
        "results/methods/{method}/sub-{subject}_{source}.nii.gz",
    wildcard_constraints:
        method="|".join(BASELINES),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/baseline/{method}/sub-{subject}_{source}.log",
    benchmark:
        "benchmarks/baseline/{method}/sub-{subject}_{source}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "midiffusion baseline --method {wildcards.method} --source {input.source} --target {input.target} "
        "--mask {input.mask} --reference {input.references} --reference-mask {input.reference_masks} "
        "--out {output} > {log} 2>&1"
