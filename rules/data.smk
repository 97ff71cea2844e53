# Raw data -> data/processed/{dataset}/{train,test}.npz (+ meta.json with checksums).


rule prepare_data:
    output:
        train="data/processed/{dataset}/train.npz",
        test="data/processed/{dataset}/test.npz",
        meta="data/processed/{dataset}/meta.json",
    params:
        options=lambda w: as_json(config["datasets"][w.dataset]),
    log:
        "logs/prepare_data/{dataset}.log",
    shell:
        "{PYTHON} --threads {threads} prepare --dataset {wildcards.dataset} --raw-dir data/raw/{wildcards.dataset}"
        " --out-dir data/processed/{wildcards.dataset} --options {params.options:q} > {log} 2>&1"
