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
        images=[f"{PRE}/{c}.nii.gz" for c in CONTRASTS],
        normalised=[f"{PRE}/{c}_norm.nii.gz" for c in CONTRASTS],
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


rule qc_tables:
    input:
        expand(f"{PRE}/qc.json", subject=COHORT.subjects),
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
