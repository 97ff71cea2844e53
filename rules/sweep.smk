# Hyperparameter sweeps (params: sweep). Per (dataset, model) in sweep.datasets x sweep.models:
#   sweep_configs   results/sweeps/{dataset}/{model}/configs.tsv       N seeded draws from the space
#   sweep_trial     .../rung{rung}/{trial}.json                        one job per trial and rung
#   sweep_rung      .../rung{rung}.json (a checkpoint)                 ranking, the 1/eta promoted
#   sweep_select    .../selected.json                                  the chosen configuration
#   sweep_report    reports/sweeps/{dataset}_{model}.{csv,md}, reports/figures/{dataset}_{model}_sweep.png
#   sweep_shared    reports/sweeps/shared/{dataset}.{csv,md}: every model's trials side by side, with
#                   the draws they share (common random numbers: the same for every model)
# The model's training rule reads selected.json, so a changed sweep changes the final model.
# With sweep.eta = 1 there is one rung at the full budget: the exhaustive sweep of the paper.
# Every trial writes its own file; a trial that failed for a transient reason (e.g. out of
# memory) is rerun by the next invocation (its `attempt` param changes), a diverged one is not.


include: "helpers/sweep.smk"


wildcard_constraints:
    rung=r"\d+",
    trial=r"t\d\d\d+",


rule sweep_configs:
    output:
        "results/sweeps/{dataset}/{model}/configs.tsv",
    log:
        "logs/sweep/{dataset}/{model}/configs.log",
    benchmark:
        "logs/benchmarks/sweep_configs/{dataset}/{model}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        space=lambda w: as_json(SWEEP["spaces"][w.model]),
        n=SWEEP.get("n_configs", 0),
        seed=SWEEP["seed"],
    shell:
        "python -m aiqn sweep-configs --model {wildcards.model} --space {params.space:q} --n {params.n}"
        " --seed {params.seed} --out {output} > {log} 2>&1"


rule sweep_trial:
    input:
        configs="results/sweeps/{dataset}/{model}/configs.tsv",
        train="data/processed/{dataset}/train.npz",
        extractor=lambda w: extractor_path(w.dataset),
        reference=lambda w: validation_reference_path(w.dataset),  # trials are ranked on the validation split
    output:
        "results/sweeps/{dataset}/{model}/rung{rung}/{trial}.json",
    log:
        "logs/sweep/{dataset}/{model}/rung{rung}/{trial}.log",
    benchmark:
        "logs/benchmarks/sweep_trial/{dataset}/{model}/{rung}/{trial}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        model_config=lambda w: model_config_json(w.dataset, w.model),
        base_train=lambda w: as_json(sweep_base_train(w.dataset, w.model)),
        steps=SWEEP.get("steps", 0),
        budgets=",".join(map(str, sweep_budgets())) if SWEEP else "",
        attempt=trial_attempt,
        n_samples=SWEEP.get("n_samples", 0),
        metric=SWEEP["metric"],
        sample_batch=config["sampling"]["batch_size"],
        sample_seed=config["sampling"]["seed"],
        splits=config["evaluation"]["is_splits"],
        name=lambda w: extractor_name(w.dataset),
        kind=extractor_kind(),
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} sweep-trial --dataset {wildcards.dataset} --model {wildcards.model}"
        " --trial {wildcards.trial} --rung {wildcards.rung} --attempt {params.attempt} --configs {input.configs}"
        " --data {input.train} --model-config {params.model_config:q} --base-train {params.base_train:q}"
        " --steps {params.steps} --budgets {params.budgets} --n-samples {params.n_samples}"
        " --sample-batch {params.sample_batch} --sample-seed {params.sample_seed} --metric {params.metric:q}"
        " --splits {params.splits} --extractor {input.extractor} --extractor-name {params.name}"
        " --extractor-kind {params.kind} --reference {input.reference} --device {params.device}"
        " --state-dir state/sweeps/{wildcards.dataset}/{wildcards.model}/{wildcards.trial} --out {output}"
        " > {log} 2>&1"


checkpoint sweep_rung:
    input:
        lambda w: rung_results(w.dataset, w.model, int(w.rung)),
    output:
        "results/sweeps/{dataset}/{model}/rung{rung}.json",
    log:
        "logs/sweep/{dataset}/{model}/rung{rung}.log",
    benchmark:
        "logs/benchmarks/sweep_rung/{dataset}/{model}/{rung}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        keep=lambda w: survivors(SWEEP["n_configs"], SWEEP["eta"], int(w.rung) + 1),
        budget=lambda w: sweep_budgets()[int(w.rung)],
        metric=SWEEP["metric"],
    shell:
        "python -m aiqn sweep-rung --results {input} --metric {params.metric:q} --keep {params.keep}"
        " --rung {wildcards.rung} --budget {params.budget} --out {output} > {log} 2>&1"


rule sweep_select:
    input:
        decisions=lambda w: [f"results/sweeps/{w.dataset}/{w.model}/rung{r}.json" for r in range(len(sweep_budgets()))],
        results=all_rung_results,
    output:
        "results/sweeps/{dataset}/{model}/selected.json",
    log:
        "logs/sweep/{dataset}/{model}/select.log",
    benchmark:
        "logs/benchmarks/sweep_select/{dataset}/{model}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        metric=SWEEP["metric"],
        eta=SWEEP["eta"],
    shell:
        "python -m aiqn sweep-select --decisions {input.decisions} --results {input.results} --metric {params.metric:q}"
        " --eta {params.eta} --out {output} > {log} 2>&1"


rule sweep_report:
    input:
        selected="results/sweeps/{dataset}/{model}/selected.json",
        results=all_rung_results,
    output:
        csv=report("reports/sweeps/{dataset}_{model}.csv", caption="../report/sweep.rst", category="Sweeps"),
        md="reports/sweeps/{dataset}_{model}.md",
        figure=report("reports/figures/{dataset}_{model}_sweep.png", caption="../report/sweep.rst", category="Sweeps"),
    log:
        "logs/sweep/{dataset}/{model}/report.log",
    benchmark:
        "logs/benchmarks/sweep_report/{dataset}/{model}.tsv"
    conda:
        "../envs/aiqn.yaml"
    shell:
        "python -m aiqn --threads {threads} sweep-report --dataset {wildcards.dataset} --model {wildcards.model}"
        " --selected {input.selected} --results {input.results} --csv {output.csv} --md {output.md}"
        " --figure {output.figure} > {log} 2>&1"


rule sweep_shared:
    input:
        selected=lambda w: [f"results/sweeps/{w.dataset}/{m}/selected.json" for m in shared_sweep_models(w.dataset)],
        results=shared_sweep_results,
    output:
        csv=report("reports/sweeps/shared/{dataset}.csv", caption="../report/sweep.rst", category="Sweeps"),
        md="reports/sweeps/shared/{dataset}.md",
    log:
        "logs/sweep/{dataset}/shared.log",
    benchmark:
        "logs/benchmarks/sweep_shared/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        spaces=lambda w: as_json({m: SWEEP["spaces"][m] for m in shared_sweep_models(w.dataset)}),
    shell:
        "python -m aiqn sweep-shared --dataset {wildcards.dataset} --spaces {params.spaces:q}"
        " --selected {input.selected} --results {input.results} --csv {output.csv} --md {output.md} > {log} 2>&1"
