# The diffusion model: target-contrast slices of the training subjects, training, sampler benchmark.


rule slices:
    input:
        images=expand(f"{PRE}/{TARGET}_norm.nii.gz", subject=SPLIT.train),
        masks=expand(f"{PRE}/brainmask.nii.gz", subject=SPLIT.train),
    output:
        "results/diffusion/train_slices.npz",
    params:
        size=config["slices"]["size"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/slices.log",
    benchmark:
        "benchmarks/slices.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "midiffusion slices --images {input.images} --masks {input.masks} --size {params.size} "
        "--out {output} > {log} 2>&1"


# Only the final model and the loss curve are outputs: the checkpoint in the same folder survives
# an interrupted run, and the rerun resumes from it.
rule train_diffusion:
    input:
        "results/diffusion/train_slices.npz",
    output:
        model="results/diffusion/model.pt",
        losses="results/diffusion/loss.csv",
        curve=report("results/diffusion/loss.png", caption="../report/loss.rst", category="Diffusion model"),
    params:
        size=config["slices"]["size"],
        options=json_option("diffusion"),
        out_dir=lambda wildcards, output: Path(output.model).parent,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=600,
        gpu=1,
    log:
        "logs/train_diffusion.log",
    benchmark:
        "benchmarks/train_diffusion.tsv"
    conda:
        "../../envs/diffusion.yaml"
    shell:
        "OMP_NUM_THREADS={threads} midiffusion train --slices {input} --out-dir {params.out_dir} --image-size {params.size} "
        "--options {params.options:q} > {log} 2>&1"


rule benchmark_sampling:
    input:
        model="results/diffusion/model.pt",
        source=normalised(SPLIT.test[0], SOURCES[0]),
        target=normalised(SPLIT.test[0], TARGET),
        mask=preprocessed(SPLIT.test[0], "brainmask"),
        labels=preprocessed(SPLIT.test[0], "labels"),
        nnunet=nnunet_model(NNUNET_DATASET),
        start=sampling_start(SPLIT.test[0], SOURCES[0]),
    output:
        "results/benchmarks/sampling.csv",
    params:
        start=start_option,
        ddim_steps=config["benchmark"]["ddim_steps"],
        n_slices=config["benchmark"]["n_slices"],
        options=json_option("sampling"),
        nnunet=nnunet_args(predict=True),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    log:
        "logs/benchmark_sampling.log",
    benchmark:
        "benchmarks/benchmark_sampling.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "OMP_NUM_THREADS={threads} midiffusion benchmark-sampling --model {input.model} --source {input.source} --target {input.target} "
        "--mask {input.mask} {params.start} --ddim-steps {params.ddim_steps} --n-slices {params.n_slices} "
        "--options {params.options:q} --labels {input.labels} {params.nnunet} --out {output} "
        "> {log} 2>&1"
