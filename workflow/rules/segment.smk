# nnU-Net v2 trained on the target contrast of the training subjects, which segments every method;
# and, for the supervised bound only, one nnU-Net per source contrast.


# nnU-Net's dataset {dataset} holds one contrast of the training subjects: the target's, which
# segments every method, or a source contrast's, trained only for the supervised bound.
rule nnunet_prepare:
    input:
        images=lambda w: [normalised(s, dataset_contrast(w)) for s in SPLIT.train],
        labels=expand(f"{PRE}/labels.nii.gz", subject=SPLIT.train),
    output:
        f"{NNUNET_ROOT}/nnUNet_raw/{{dataset}}/dataset.json",
    params:
        nnunet=lambda w: nnunet_args(dataset_contrast(w), trainer=None),
        name=dataset_contrast,
        cases=lambda wildcards, input: " ".join(
            f"--image sub-{s}={i} --label sub-{s}={l}" for s, i, l in zip(SPLIT.train, input.images, input.labels)
        ),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/nnunet_prepare/{dataset}.log",
    benchmark:
        "benchmarks/nnunet_prepare/{dataset}.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-export {params.nnunet} --name {params.name} {params.cases} > {log} 2>&1"


rule nnunet_plan:
    input:
        f"{NNUNET_ROOT}/nnUNet_raw/{{dataset}}/dataset.json",
    output:
        f"{NNUNET_ROOT}/nnUNet_preprocessed/{{dataset}}/{NNUNET_PLANS}",
    params:
        nnunet=lambda w: nnunet_args(dataset_contrast(w), trainer=None),
    threads: max(NNUNET["num_processes"], 1)  # its worker processes
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        "logs/nnunet_plan/{dataset}.log",
    benchmark:
        "benchmarks/nnunet_plan/{dataset}.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-plan {params.nnunet} > {log} 2>&1"


rule nnunet_train:
    input:
        f"{NNUNET_ROOT}/nnUNet_preprocessed/{{dataset}}/{NNUNET_PLANS}",
    output:
        nnunet_model("{dataset}", "{trainer}"),
    params:
        nnunet=lambda w: nnunet_args(dataset_contrast(w), trainer=w.trainer, train=True),
    threads: 2
    resources:
        mem_mb=12000,
        runtime=1440,
        gpu=1,
    log:
        "logs/nnunet_train/{dataset}/{trainer}.log",
    benchmark:
        "benchmarks/nnunet_train/{dataset}/{trainer}.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-train {params.nnunet} > {log} 2>&1"


# Each nnU-Net's per-epoch losses and validation pseudo Dice: whether its budget let it level off.
# {curve} is a segmenter of the methods, or supervised_<source> for the supervised bound's.
rule nnunet_curve:
    input:
        lambda w: curve_model(w.curve),
    output:
        "results/nnunet_curves/{curve}.csv",
    wildcard_constraints:
        curve="|".join([*SEGMENTERS_RUN, *SUPERVISED_CURVES]),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    log:
        "logs/nnunet_curve/{curve}.log",
    benchmark:
        "benchmarks/nnunet_curve/{curve}.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-curve --checkpoint {input} --out {output} > {log} 2>&1"


# Per segmenter, one nnU-Net process segments the images of every method it reads: the model is
# loaded once. (One rule per segmenter: the list of outputs differs from one to the next.)
for segmenter in SEGMENTERS_RUN:

    rule:
        name:
            f"nnunet_predict_{segmenter}"
        input:
            model=nnunet_model(NNUNET_DATASET, TRAINERS[segmenter]),
            images=[image for image, _ in segmenter_cases(segmenter)],
        output:
            [segmentation for _, segmentation in segmenter_cases(segmenter)],
        params:
            nnunet=nnunet_args(predict=True, trainer=TRAINERS[segmenter]),
            cases=" ".join(f"--case {image} {segmentation}" for image, segmentation in segmenter_cases(segmenter)),
        threads: 2
        resources:
            mem_mb=8000,
            runtime=120,
            gpu=1,
        log:
            f"logs/nnunet_predict/{segmenter}.log",
        benchmark:
            f"benchmarks/nnunet_predict/{segmenter}.tsv"
        conda:
            "../../envs/segmentation.yaml"
        shell:
            "midiffusion nnunet-predict {params.nnunet} {params.cases} > {log} 2>&1"


# The supervised bound: each source contrast segmented by an nnU-Net trained on that contrast, with
# labels, the way no zero-shot user can. Translation feeds the target's nnU-Net a function of the
# source image, so this is about the best any translation of it can do.
rule supervised_predict:
    input:
        model=lambda w: nnunet_model(NNUNET_DATASETS[w.source]),
        images=[normalised(s, "{source}") for s in SPLIT.test],
    output:
        [f"results/segmentations/supervised/sub-{s}_{{source}}.nii.gz" for s in SPLIT.test],
    params:
        nnunet=lambda w: nnunet_args(w.source, predict=True),
        cases=lambda wildcards, input, output: " ".join(f"--case {i} {o}" for i, o in zip(input.images, output)),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    log:
        "logs/supervised_predict/{source}.log",
    benchmark:
        "benchmarks/supervised_predict/{source}.tsv"
    conda:
        "../../envs/segmentation.yaml"
    shell:
        "midiffusion nnunet-predict {params.nnunet} {params.cases} > {log} 2>&1"
