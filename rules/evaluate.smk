# Evaluation: reference statistics once per (dataset, extractor, N); FID / IS (and bits/dim)
# per checkpoint; the real test split against the same reference as the floor.


rule reference_stats:
    input:
        extractor=rules.train_classifier.output.model,
        data=rules.prepare_data.output.train,
    output:
        "results/reference/{dataset}/{dataset}-classifier_{n}.npz",
    params:
        seed=config["evaluation"].get("reference_seed", 0),
    wildcard_constraints:
        n=r"\d+",
    log:
        "logs/reference_stats/{dataset}/{n}.log",
    shell:
        "{PYTHON} --threads {threads} reference-stats --extractor {input.extractor} --extractor-name {wildcards.dataset}-classifier"
        " --data {input.data} --n {wildcards.n} --seed {params.seed} --out {output} > {log} 2>&1"


rule evaluate_checkpoint:
    input:
        samples=rules.sample.output.samples,
        checkpoint="results/runs/{dataset}/{model}/ckpt_{step}.pt",
        extractor=rules.train_classifier.output.model,
        reference=lambda w: reference_path(w.dataset),
        test=rules.prepare_data.output.test,
        dataset_meta=rules.prepare_data.output.meta,
        samples_meta=rules.sample.output.meta,
    output:
        "results/metrics/{dataset}/{model}/{step}.json",
    params:
        splits=config["evaluation"].get("is_splits", 10),
        final=lambda w: "--final" if w.step == final_step(w.model) else "",
    threads: 1
    log:
        "logs/evaluate/{dataset}/{model}/{step}.log",
    shell:
        "{PYTHON} --threads {threads} evaluate --dataset {wildcards.dataset} --model {wildcards.model}"
        " --samples {input.samples} --checkpoint {input.checkpoint} --extractor {input.extractor}"
        " --extractor-name {wildcards.dataset}-classifier --reference {input.reference} --test {input.test}"
        " --dataset-meta {input.dataset_meta} --splits {params.splits} {params.final}"
        " --wildcards dataset={wildcards.dataset},model={wildcards.model},step={wildcards.step}"
        " --out {output} > {log} 2>&1"


rule evaluate_real:
    input:
        test=rules.prepare_data.output.test,
        extractor=rules.train_classifier.output.model,
        reference=lambda w: reference_path(w.dataset),
        dataset_meta=rules.prepare_data.output.meta,
    output:
        "results/metrics/{dataset}/real_test.json",
    params:
        splits=config["evaluation"].get("is_splits", 10),
    log:
        "logs/evaluate_real/{dataset}.log",
    shell:
        "{PYTHON} --threads {threads} evaluate-real --dataset {wildcards.dataset} --test {input.test} --extractor {input.extractor}"
        " --extractor-name {wildcards.dataset}-classifier --reference {input.reference} --splits {params.splits}"
        " --dataset-meta {input.dataset_meta} --wildcards dataset={wildcards.dataset} --out {output} > {log} 2>&1"
