# Raw data -> data/processed/{dataset}/{train,val,test}.npz (+ meta.json with checksums): val is carved
# from the dataset's train split (params: validation) for choosing configurations and checkpoints;
# nothing trains on it, and the test split is only reported.


rule prepare_data:
    output:
        train="data/processed/{dataset}/train.npz",
        val="data/processed/{dataset}/val.npz",
        test="data/processed/{dataset}/test.npz",
        meta="data/processed/{dataset}/meta.json",
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        options=lambda w: as_json(config["datasets"][w.dataset]),
        validation=as_json(config["validation"]),
    shell:
        "python -m aiqn --threads {threads} prepare --dataset {wildcards.dataset} --raw-dir data/raw/{wildcards.dataset}"
        " --out-dir data/processed/{wildcards.dataset} --options {params.options:q}"
        " --validation {params.validation:q} > {log} 2>&1"


# A raw file of a registered download group (a dataset's archives, or the Inception weights),
# fetched with its checksum; a file placed there by hand is verified instead. Offline, or where a
# source needs a login, the job stops with a message naming the path and the checksum.
rule download:
    output:
        "data/raw/{group}/{filename}",
    log:
        "logs/download/{group}/{filename}.log",
    benchmark:
        "logs/benchmarks/download/{group}/{filename}.tsv"
    wildcard_constraints:
        group=r"[A-Za-z0-9_-]+",
        filename=r"[^/]+",
    conda:
        "../envs/aiqn.yaml"
    shell:
        "python -m aiqn download --group {wildcards.group} --file {wildcards.filename} --raw-dir data/raw/{wildcards.group}"
        " > {log} 2>&1"


# DVC tracking of raw downloads (params: track_raw): once a group's files are verified (by
# prepare_data, or the download rule for the Inception weights), `dvc add` records them in
# data/raw/{group}.dvc; commit that file to git and `dvc push` uploads the raw files.
rule track_raw:
    input:
        lambda w: INCEPTION_WEIGHTS if w.group == "inception" else f"data/processed/{w.group}/meta.json",
    output:
        "data/raw/{group}.dvc",
    log:
        "logs/track_raw/{group}.log",
    benchmark:
        "logs/benchmarks/track_raw/{group}.tsv"
    wildcard_constraints:
        group=r"[A-Za-z0-9_-]+",
    conda:
        "../envs/aiqn.yaml"
    resources:
        dvc_lock=1,
    shell:
        "dvc add --quiet data/raw/{wildcards.group} > {log} 2>&1"
