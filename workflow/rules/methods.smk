# One image per producer and test case, on the target grid, normalised to [-1, 1]: a case is
# sub-<id>_<source>, or sub-<id> for a producer whose image does not depend on the source
# (midiffusion.methods.case_name; `unguided`, `oracle` and `grid_ceiling` are made once per subject).


rule translate:
    input:
        unpack(translate_inputs),
    output:
        image="results/methods/{producer}/{case}.nii.gz",
        std="results/methods/{producer}/{case}_sd.nii.gz",
    wildcard_constraints:
        producer="|".join(producers("diffusion")),
    params:
        source=lambda wildcards, input: f"--source {input.source}" if "source" in input.keys() else "",
        start=start_option,
        options=json_option("sampling"),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    log:
        "logs/translate/{producer}/{case}.log",
    benchmark:
        "benchmarks/translate/{producer}/{case}.tsv"
    conda:
        "../../envs/diffusion.yaml"
    shell:
        "OMP_NUM_THREADS={threads} midiffusion translate --method {wildcards.producer} --model {input.model} "
        "{params.source} {params.start} --mask {input.mask} --out {output.image} --std {output.std} "
        "--options {params.options:q} > {log} 2>&1"


rule baseline:
    input:
        source=lambda w: normalised(case_subject(w), case_source(w)),
        target=lambda w: normalised(case_subject(w), TARGET),
        mask=lambda w: preprocessed(case_subject(w), "brainmask"),
        templates=lambda w: [preprocessed(case_subject(w), "template")] if TEMPLATE_REGISTERED else [],
        references=[normalised(s, TARGET) for s in SPLIT.train],
        reference_masks=[preprocessed(s, "brainmask") for s in SPLIT.train],
    output:
        "results/methods/{producer}/{case}.nii.gz",
    wildcard_constraints:
        producer="|".join(producers("target") + producers("map")),
    params:
        size=config["slices"]["size"],
        percentiles=percentiles_option(),
        template=lambda wildcards, input: f"--template {input.templates[0]}" if input.templates else "",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/baseline/{producer}/{case}.log",
    benchmark:
        "benchmarks/baseline/{producer}/{case}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "midiffusion baseline --method {wildcards.producer} --source {input.source} --target {input.target} "
        "--mask {input.mask} {params.template} --slice-size {params.size} {params.percentiles} --reference {input.references} "
        "--reference-mask {input.reference_masks} --out {output} > {log} 2>&1"
