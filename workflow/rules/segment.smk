# nnU-Net v2 trained on the target contrast of the training subjects; every method segmented by it.


def test_cases(method):
    """case id -> image of a method, for every test subject and source contrast."""
    return {
        f"sub-{s}_{c}": f"results/methods/{method}/sub-{s}_{c}.nii.gz" for s in SPLIT.test for c in SOURCES
    }


rule nnunet_prepare:
    input:
        images=expand(f"{PRE}/{TARGET}_norm.nii.gz", subject=SPLIT.train),
        labels=expand(f"{PRE}/labels.nii.gz", subject=SPLIT.train),
    output:
        f"{NNUNET_ROOT}/nnUNet_raw/{NNUNET_DATASET}/dataset.json",
    params:
        nnunet=nnunet_args(),
        name=TARGET,
        cases=lambda wildcards, input: " ".join(
            f"--image sub-{s}={i} --label sub-{s}={l}" for s, i, l in zip(SPLIT.train, input.images, input.labels)
        ),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/nnunet_prepare.log",
    benchmark:
        "benchmarks/nnunet_prepare.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-export {params.nnunet} --name {params.name} {params.cases} > {log} 2>&1"


rule nnunet_plan:
    input:
        f"{NNUNET_ROOT}/nnUNet_raw/{NNUNET_DATASET}/dataset.json",
    output:
        f"{NNUNET_ROOT}/nnUNet_preprocessed/{NNUNET_DATASET}/nnUNetPlans.json",
    params:
        nnunet=nnunet_args(),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        "logs/nnunet_plan.log",
    benchmark:
        "benchmarks/nnunet_plan.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-plan {params.nnunet} > {log} 2>&1"


rule nnunet_train:
    input:
        f"{NNUNET_ROOT}/nnUNet_preprocessed/{NNUNET_DATASET}/nnUNetPlans.json",
    output:
        NNUNET_MODEL,
    params:
        nnunet=nnunet_args(),
    threads: 2
    resources:
        mem_mb=12000,
        runtime=1440,
        gpu=1,
    log:
        "logs/nnunet_train.log",
    benchmark:
        "benchmarks/nnunet_train.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-train {params.nnunet} > {log} 2>&1"


# One nnU-Net process segments every method's volumes: the model is loaded once.
rule nnunet_predict:
    input:
        model=NNUNET_MODEL,
        images=[path for method in METHODS for path in test_cases(method).values()],
    output:
        [f"results/segmentations/{m}/{case}.nii.gz" for m in METHODS for case in test_cases(m)],
    params:
        nnunet=nnunet_args(predict=True),
        cases=" ".join(
            f"--case {path} results/segmentations/{m}/{case}.nii.gz" for m in METHODS for case, path in test_cases(m).items()
        ),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    log:
        "logs/nnunet_predict.log",
    benchmark:
        "benchmarks/nnunet_predict.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-predict {params.nnunet} {params.cases} > {log} 2>&1"
