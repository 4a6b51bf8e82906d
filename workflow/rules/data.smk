# Cohort (phantom) and preprocessing (N4, brain extraction, registration, normalisation).


rule cohort:
    output:
        images=[str(phantom_image(DATA["root"], "{subject}", c)) for c in [TARGET, *SOURCES]],
        labels=str(phantom_image(DATA["root"], "{subject}", "dseg")),
        misalignment=str(phantom_misalignment(DATA["root"], "{subject}")),
        qc="results/qc/phantom/sub-{subject}.png",
    params:
        root=DATA["root"],
        target=TARGET,
        sources=SOURCES,
        voxel_mm=config.get("phantom", {}).get("voxel_mm", 2),
        seed=config.get("phantom", {}).get("seed", 0),
        head="" if config.get("phantom", {}).get("with_head", True) else "--no-head",
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
        "--seed {params.seed} {params.head} --qc-dir results/qc/phantom > {log} 2>&1"


def preprocess_inputs(wildcards):
    inputs = {"images": [str(IMAGES[wildcards.subject][c]) for c in [TARGET, *SOURCES]]}
    if labels_path(wildcards.subject):
        inputs["labels"] = str(labels_path(wildcards.subject))
    if PHANTOM:
        inputs["misalignment"] = str(phantom_misalignment(DATA["root"], wildcards.subject))
    return inputs


def preprocess_args(wildcards, input):
    images = " ".join(f"--image {c}={p}" for c, p in zip([TARGET, *SOURCES], input.images))
    truth = f"--misalignment {input.misalignment}" if PHANTOM else ""
    labels = f"--labels {input.labels}" if hasattr(input, "labels") else ""
    pre = config["preprocess"]
    n4 = "" if pre.get("n4", True) else "--no-n4"
    return (
        f"{images} {labels} {truth} {n4} --registration {pre.get('registration', 'Rigid')} "
        f"--brain-extraction {pre.get('brain_extraction', 'template')} "
        f"--percentiles {' '.join(map(str, pre.get('percentiles', [0.5, 99.5])))}"
    )


rule preprocess:
    input:
        unpack(preprocess_inputs),
    output:
        images=[f"{PRE}/{c}.nii.gz" for c in [TARGET, *SOURCES]],
        normalised=[f"{PRE}/{c}_norm.nii.gz" for c in [TARGET, *SOURCES]],
        mask=f"{PRE}/brainmask.nii.gz",
        labels=f"{PRE}/labels.nii.gz",
        qc=f"{PRE}/qc.json",
    params:
        args=preprocess_args,
        target=TARGET,
        out_dir=PRE,
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
        expand(f"{PRE}/qc.json", subject=SUBJECTS),
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
