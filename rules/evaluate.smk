# Evaluation: reference statistics once per (dataset, extractor, N); the real test split against
# the same reference as the floor. Each checkpoint's FID / IS (and bits/dim) is scored by the
# job that samples it (rules/score.smk). The extractor
# (evaluation.extractor) is the pipeline's classifier or Inception-v3; its file is an input of
# every rule here, so new weights re-score everything.


rule reference_stats:
    input:
        extractor=lambda w: extractor_path(w.dataset),
        data=rules.prepare_data.output.train,
    output:
        "results/reference/{dataset}/{extractor}_{n}.npz",
    params:
        seed=config["evaluation"]["reference_seed"],
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    wildcard_constraints:
        n=r"\d+",
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/reference_stats/{dataset}/{extractor}_{n}.log",
    shell:
        "{PYTHON} --threads {threads} reference-stats --dataset {wildcards.dataset} --extractor {input.extractor}"
        " --extractor-name {wildcards.extractor} --extractor-kind {params.kind} --batch-size {params.batch_size}"
        " --device {params.device} --data {input.data} --n {wildcards.n} --seed {params.seed} --out {output}"
        " > {log} 2>&1"


rule evaluate_real:
    input:
        test=rules.prepare_data.output.test,
        extractor=lambda w: extractor_path(w.dataset),
        reference=lambda w: reference_path(w.dataset),
        dataset_meta=rules.prepare_data.output.meta,
    output:
        real_data_metrics("{dataset}"),
    params:
        splits=config["evaluation"]["is_splits"],
        name=lambda w: extractor_name(w.dataset),
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        device=config["device"],
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/evaluate_real/{dataset}.log",
    shell:
        "{PYTHON} --threads {threads} evaluate-real --dataset {wildcards.dataset} --test {input.test}"
        " --extractor {input.extractor} --extractor-name {params.name} --extractor-kind {params.kind}"
        " --batch-size {params.batch_size} --device {params.device} --reference {input.reference}"
        " --splits {params.splits} --dataset-meta {input.dataset_meta} --wildcards dataset={wildcards.dataset}"
        " --out {output} > {log} 2>&1"
