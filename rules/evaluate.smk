# Evaluation: reference statistics once per (dataset, extractor, N), the features of every train
# and test image once per (dataset, extractor) for the N-vs-N metrics and the memorisation check,
# and the real-data floor (real images carved N vs N like the models' rows). Each checkpoint's FID / IS (and bits/dim) is scored by the
# job that samples it (rules/score.smk). The extractor
# (evaluation.extractor) is the pipeline's classifier or Inception-v3; its file is an input of
# every rule here, so new weights re-score everything.


rule reference_stats:
    input:
        extractor=lambda w: extractor_path(w.dataset),
        data=rules.prepare_data.output.train,
    output:
        "results/reference/{dataset}/{extractor}_{n}.npz",
    log:
        "logs/reference_stats/{dataset}/{extractor}_{n}.log",
    benchmark:
        "logs/benchmarks/reference_stats/{dataset}/{extractor}/{n}.tsv"
    wildcard_constraints:
        n=r"\d+",
    conda:
        "../envs/aiqn.yaml"
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        seed=config["evaluation"]["reference_seed"],
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} reference-stats --dataset {wildcards.dataset} --extractor {input.extractor}"
        " --extractor-name {wildcards.extractor} --extractor-kind {params.kind} --batch-size {params.batch_size}"
        " --device {params.device} --data {input.data} --n {wildcards.n} --seed {params.seed} --out {output}"
        " > {log} 2>&1"


# The validation split's statistics (every image of val.npz): the sweep ranks configurations by FID against
# them, and every checkpoint gets an 'FID vs val', which Table 1's 'chosen on validation' rows pick by.
rule validation_stats:
    input:
        extractor=lambda w: extractor_path(w.dataset),
        data=rules.prepare_data.output.val,
    output:
        "results/reference/{dataset}/{extractor}_val.npz",
    log:
        "logs/reference_stats/{dataset}/{extractor}_val.log",
    benchmark:
        "logs/benchmarks/validation_stats/{dataset}/{extractor}.tsv"
    conda:
        "../envs/aiqn.yaml"
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        seed=config["evaluation"]["reference_seed"],
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} reference-stats --dataset {wildcards.dataset} --extractor {input.extractor}"
        " --extractor-name {wildcards.extractor} --extractor-kind {params.kind} --batch-size {params.batch_size}"
        " --device {params.device} --data {input.data} --n 0 --split val --seed {params.seed} --out {output}"
        " > {log} 2>&1"


rule reference_features:
    input:
        extractor=lambda w: extractor_path(w.dataset),
        train=rules.prepare_data.output.train,
        test=rules.prepare_data.output.test,
    output:
        "results/reference/{dataset}/{extractor}_features.npz",
    log:
        "logs/reference_features/{dataset}/{extractor}.log",
    benchmark:
        "logs/benchmarks/reference_features/{dataset}/{extractor}.tsv"
    conda:
        "../envs/aiqn.yaml"
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} reference-features --dataset {wildcards.dataset} --extractor {input.extractor}"
        " --extractor-name {wildcards.extractor} --extractor-kind {params.kind} --batch-size {params.batch_size}"
        " --device {params.device} --train {input.train} --test {input.test} --out {output} > {log} 2>&1"


rule evaluate_real:
    input:
        test=rules.prepare_data.output.test,
        train=rules.prepare_data.output.train,
        features=lambda w: features_path(w.dataset),
        extractor=lambda w: extractor_path(w.dataset),
        reference=lambda w: reference_path(w.dataset),
        dataset_meta=rules.prepare_data.output.meta,
    output:
        real_data_metrics("{dataset}"),
    log:
        "logs/evaluate_real/{dataset}.log",
    benchmark:
        "logs/benchmarks/evaluate_real/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        splits=config["evaluation"]["is_splits"],
        comparison=lambda w: comparison_args(w.dataset),
        name=lambda w: extractor_name(w.dataset),
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} evaluate-real --dataset {wildcards.dataset} --test {input.test}"
        " --extractor {input.extractor} --extractor-name {params.name} --extractor-kind {params.kind}"
        " --batch-size {params.batch_size} --device {params.device} --reference {input.reference}"
        " --splits {params.splits} {params.comparison} --dataset-meta {input.dataset_meta}"
        " --wildcards dataset={wildcards.dataset}"
        " --out {output} > {log} 2>&1"
