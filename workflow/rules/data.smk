# Cohort (phantom) and preprocessing (N4, brain extraction, registration, normalisation).


rule anatomy:
    output:
        "results/anatomy/{anatomy}_{voxel_mm}mm.nii.gz",
    wildcard_constraints:
        anatomy="[a-z0-9]+",
        voxel_mm="[0-9]+",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    log:
        "logs/anatomy/{anatomy}_{voxel_mm}mm.log",
    benchmark:
        "benchmarks/anatomy/{anatomy}_{voxel_mm}mm.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS={threads} midiffusion anatomy --name {wildcards.anatomy} "
        "--voxel-mm {wildcards.voxel_mm} --out {output} > {log} 2>&1"


rule cohort:
    input:
        anatomy_maps=anatomy_maps,
    output:
        images=[str(bids_image(DATA["root"], "{subject}", c)) for c in CONTRASTS],
        labels=str(bids_image(DATA["root"], "{subject}", "dseg")),
        misalignment=str(bids_image(DATA["root"], "{subject}", "misalignment", ".json")),
        qc="results/qc/phantom/sub-{subject}.png",
    params:
        root=lambda wildcards, output: Path(output.labels).parents[2],  # <root>/sub-<id>/anat/
        target=TARGET,
        sources=SOURCES,
        voxel_mm=config["phantom"]["voxel_mm"],
        seed=config["phantom"]["seed"],
        head="" if config["phantom"]["with_head"] else "--no-head",
        qc_dir=lambda wildcards, output: Path(output.qc).parent,
        anatomy=lambda wildcards, input: f"--anatomy-maps {input.anatomy_maps}" if input.anatomy_maps else "",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/cohort/sub-{subject}.log",
    benchmark:
        "benchmarks/cohort/sub-{subject}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "midiffusion phantom --root {params.root} --subject {wildcards.subject} "
        "--voxel-mm {params.voxel_mm} --target {params.target} --sources {params.sources} "
        "--seed {params.seed} {params.head} {params.anatomy} --qc-dir {params.qc_dir} > {log} 2>&1"


rule cohort_split:
    output:
        str(SPLIT_FILE),
    params:
        record=COHORT.record(),  # a changed split rewrites it
    localrule: True
    run:
        write_json(output[0], params.record)


rule preprocess:
    input:
        unpack(preprocess_inputs),
    output:
        images=[f"{PRE}/{TARGET}.nii.gz", f"{PRE}/{TARGET}_norm.nii.gz"],
        mask=f"{PRE}/brainmask.nii.gz",
        templates=[f"{PRE}/template.nii.gz"] if TEMPLATE_REGISTERED else [],
        labels=f"{PRE}/labels.nii.gz",
        qc=f"{PRE}/qc.json",
    params:
        args=preprocess_args,
        target=TARGET,
        out_dir=lambda wildcards, output: Path(output.mask).parent,
    threads: 1  # ITK scales poorly past one thread here: subjects in parallel use the cores better
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "logs/preprocess/sub-{subject}.log",
    benchmark:
        "benchmarks/preprocess/sub-{subject}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS={threads} midiffusion preprocess --subject {wildcards.subject} "
        "--target {params.target} {params.args} --out-dir {params.out_dir} > {log} 2>&1"


# A source contrast on its subject's preprocessed target: a job per source, so that only the sources
# something reads are registered (the test subjects'; the training subjects' for the supervised bound).
rule register:
    input:
        unpack(register_inputs),
    output:
        images=[f"{PRE}/{{source}}.nii.gz", f"{PRE}/{{source}}_norm.nii.gz"],
        transform=f"{PRE}/{{source}}_to_{TARGET}.mat",
        qc=f"{PRE}/{{source}}_qc.json",
    params:
        args=register_args,
        target=TARGET,
        target_dir=lambda wildcards, input: Path(input.mask).parent,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        "logs/register/sub-{subject}_{source}.log",
    benchmark:
        "benchmarks/register/sub-{subject}_{source}.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS={threads} midiffusion register --subject {wildcards.subject} "
        "--target {params.target} --source {wildcards.source}={input.source} --target-dir {params.target_dir} "
        "{params.args} > {log} 2>&1"


rule qc_tables:
    input:
        expand(f"{PRE}/qc.json", subject=COHORT.subjects),
        expand(f"{PRE}/{{source}}_qc.json", subject=SPLIT.test, source=SOURCES),
    output:
        registration=report(
            "results/tables/registration.csv", caption="../report/registration.rst", category="Preprocessing"
        ),
        atropos=report("results/tables/atropos.csv", caption="../report/atropos.rst", category="Preprocessing"),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    log:
        "logs/qc_tables.log",
    benchmark:
        "benchmarks/qc_tables.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "midiffusion qc-tables --inputs {input} --registration {output.registration} --atropos {output.atropos} "
        "> {log} 2>&1"
