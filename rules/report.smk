# Reports: Table 1 (long CSV, Markdown, LaTeX) with the paper's numbers beside ours, and the
# figures per dataset (sample grid, IS/FID over training = Figure 4 analogue, loss curves).
# The tables and the training curves read every seed of run.seeds; the sample grids, inpainting,
# density, class grids and the memorisation figure show the first seed's final checkpoint.


include: "helpers/report.smk"


rule table1:
    input:
        metrics=[f for dataset in config["run"]["datasets"] for f in metric_files(dataset)],
        paper="paper/aiqn_table1.csv",
    output:
        csv=report("reports/tables/table1.csv", caption="../report/table1.rst", category="Table 1"),
        md="reports/tables/table1.md",
        tex="reports/tables/table1.tex",
        provenance="reports/provenance/table1.json",
    log:
        "logs/report/table1.log",
    benchmark:
        "logs/benchmarks/table1.tsv"
    conda:
        "../envs/aiqn.yaml"
    shell:
        "python -m aiqn --threads {threads} table --metrics {input.metrics} --paper {input.paper} --out-dir reports/tables"
        " --provenance {output.provenance} > {log} 2>&1"


rule figures:
    input:
        real=rules.prepare_data.output.test,
        samples=lambda w: [final_samples(w.dataset, m) for m in models_for(w.dataset)],
        train_logs=lambda w: [
            f"{run_dir(w.dataset, m, figure_seed())}/{name}"
            for m in models_for(w.dataset)
            for name in ("train_log.csv", "config.json")
        ],
        metrics=lambda w: metric_files(w.dataset),
    output:
        grid=report(
            "reports/figures/{dataset}_samples.png",
            caption="../report/samples.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        curves=report(
            "reports/figures/{dataset}_training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        loss=report(
            "reports/figures/{dataset}_loss.png",
            caption="../report/loss.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/report/figures_{dataset}.log",
    benchmark:
        "logs/benchmarks/figures/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        samples=lambda w: " ".join(f"{m}={final_samples(w.dataset, m)}" for m in models_for(w.dataset)),
        train_logs=lambda w: " ".join(
            f"{m}={run_dir(w.dataset, m, figure_seed())}/train_log.csv" for m in models_for(w.dataset)
        ),
        grid_n=config["report"]["grid_n"],
        variants=lambda w: " ".join(f"{m}={base_model(m)}" for m in models_for(w.dataset) if base_model(m) != m),
    shell:
        "python -m aiqn --threads {threads} figures --dataset {wildcards.dataset} --real {input.real} --samples {params.samples}"
        " --train-logs {params.train_logs} --metrics {input.metrics} --grid-n {params.grid_n}"
        " --grid-out {output.grid} --curves-out {output.curves} --loss-out {output.loss}"
        " --variants {params.variants} > {log} 2>&1"


# The memorisation check's figure: every model's samples' distances to the nearest training image
# against the test images', in pixel and feature space, and each model's closest samples beside
# their nearest training images. The fractions are in every table (rules/score.smk).
rule memorisation_figure:
    input:
        samples=lambda w: list(generative_samples(w.dataset).values()),
        train=rules.prepare_data.output.train,
        features=lambda w: features_path(w.dataset),
        extractor=lambda w: extractor_path(w.dataset),
    output:
        report(
            "reports/figures/{dataset}_memorisation.png",
            caption="../report/memorisation.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/report/memorisation_{dataset}.log",
    benchmark:
        "logs/benchmarks/memorisation_figure/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        samples=lambda w: " ".join(f"{name}={path}" for name, path in generative_samples(w.dataset).items()),
        name=lambda w: extractor_name(w.dataset),
        kind=extractor_kind(),
        batch_size=config["evaluation"]["batch_size"],
        percentile=config["evaluation"]["memorisation_percentile"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} memorisation-figure --dataset {wildcards.dataset} --samples {params.samples}"
        " --train {input.train} --features {input.features} --extractor {input.extractor}"
        " --extractor-name {params.name} --extractor-kind {params.kind} --batch-size {params.batch_size}"
        " --device {params.device} --percentile {params.percentile} --out {output} > {log} 2>&1"


# The claims of the three papers (paper/claims.yaml) tested on the generated tables: a verdict per
# claim and dataset, with the interval of the difference, its KID version and the memorisation
# fractions of both models (aiqn.report.claims); one provenance record per claim cell.
rule claims:
    input:
        claims="paper/claims.yaml",
        tables=list(claim_tables().values()),
        provenance=[f"reports/provenance/{name}.json" for name in claim_tables()],
    output:
        csv=report("reports/tables/claims.csv", caption="../report/claims.rst", category="0. Claims and verdicts"),
        md="reports/tables/claims.md",
        provenance="reports/provenance/claims.json",
    log:
        "logs/report/claims.log",
    benchmark:
        "logs/benchmarks/claims.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        tables=" ".join(f"{name}={path}" for name, path in claim_tables().items()),
        models=" ".join(dict.fromkeys(m for d in config["run"]["datasets"] for m in models_for(d))),
    shell:
        "python -m aiqn claims --claims {input.claims} --tables {params.tables} --out-dir reports/tables"
        " --provenance {output.provenance} --models {params.models} > {log} 2>&1"


# The budget curve: every Table 1 claim's a - b with its 95% interval at each checkpoint step, so a
# reader sees whether a verdict is still moving when the run stops.
rule budget_curve:
    input:
        claims="paper/claims.yaml",
        metrics=lambda w: metric_files(w.dataset),
    output:
        csv="reports/tables/{dataset}_budget.csv",
        figure=report(
            "reports/figures/{dataset}_budget.png",
            caption="../report/claims.rst",
            category="0. Claims and verdicts",
        ),
    log:
        "logs/report/budget_{dataset}.log",
    benchmark:
        "logs/benchmarks/budget_curve/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    shell:
        "python -m aiqn budget-curve --claims {input.claims} --dataset {wildcards.dataset} --metrics {input.metrics}"
        " --csv {output.csv} --figure {output.figure} > {log} 2>&1"


# Figures 7 and 11: a class-conditional model's final samples (drawn with uniform labels for
# evaluation), one row per class.
rule class_grid:
    input:
        samples=lambda w: final_samples(w.dataset, w.model),
        dataset_meta=rules.prepare_data.output.meta,
    output:
        report(
            "reports/figures/{dataset}_{model}_classes.png",
            caption="../report/class_grid.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/report/class_grid_{dataset}_{model}.log",
    benchmark:
        "logs/benchmarks/class_grid/{dataset}/{model}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        per_class=config["report"]["class_grid_per_class"],
    shell:
        "python -m aiqn class-grid --dataset {wildcards.dataset} --model {wildcards.model} --samples {input.samples}"
        " --dataset-meta {input.dataset_meta} --per-class {params.per_class} --out {output} > {log} 2>&1"


# Inpainting (Figures 6 and 12): test images with their top rows given, K completions per model.
rule inpainting:
    input:
        test=rules.prepare_data.output.test,
        checkpoints=lambda w: [final_checkpoint(w.dataset, m) for m in models_for(w.dataset)],
    output:
        npz="results/inpainting/{dataset}.npz",
        figure=report(
            "reports/figures/{dataset}_inpainting.png",
            caption="../report/inpainting.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/report/inpainting_{dataset}.log",
    benchmark:
        "logs/benchmarks/inpainting/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        checkpoints=lambda w: " ".join(f"{m}={final_checkpoint(w.dataset, m)}" for m in models_for(w.dataset)),
        n_images=config["inpainting"]["n_images"],
        completions=config["inpainting"]["completions"],
        known_rows=config["inpainting"]["known_rows"],
        seed=config["inpainting"]["seed"],
        method=config["sampling"]["method"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} inpaint --dataset {wildcards.dataset} --test {input.test}"
        " --checkpoints {params.checkpoints} --n-images {params.n_images} --completions {params.completions}"
        " --known-rows {params.known_rows} --seed {params.seed} --method {params.method} --device {params.device}"
        " --out-npz {output.npz} --out-png {output.figure} > {log} 2>&1"


# Quantile density (section 3.2): samples of each PixelIQN model with dQ/dtau = 1/p per
# pixel-channel, computed exactly by a pixel-local backward pass (aiqn.methods.pixeliqn.density).
rule density:
    input:
        checkpoint=lambda w: final_checkpoint(w.dataset, w.model),
    output:
        npz="results/density/{dataset}/{model}.npz",
        figure=report(
            "reports/figures/{dataset}_{model}_density.png",
            caption="../report/density.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
    log:
        "logs/report/density_{dataset}_{model}.log",
    benchmark:
        "logs/benchmarks/density/{dataset}/{model}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        seed=config["sampling"]["seed"],
        method=config["sampling"]["method"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} density --checkpoint {input.checkpoint} --n 16 --seed {params.seed}"
        " --method {params.method} --device {params.device} --out-npz {output.npz} --out-png {output.figure}"
        " > {log} 2>&1"
