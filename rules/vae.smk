# The AIQN-VAE (appendix, Figure 9): a convolutional VAE and an AIQN over its latent space.
# Per dataset of vae.datasets and seed of run.seeds: the plain VAE and the AIQN-VAE are trained
# (resumable state in state/vae/{dataset}/{variant}/seed-{seed}/, the final checkpoint hard-linked into
# results/vae/{dataset}/{variant}/seed-{seed}/), three rows are sampled and scored exactly like the
# PixelCNN models (same extractor, reference statistics, labels and provenance), then the table
# reports/tables/aiqn_vae.* (mean and interval over seeds) and the figures
# reports/figures/{dataset}_aiqn_vae{,_loss}.png (the first seed). Everything lives under results/vae/, which no
# other rule's pattern matches. docs/aiqn-vae.md.


include: "helpers/vae.smk"


rule train_vae:
    input:
        train="data/processed/{dataset}/train.npz",
    output:
        checkpoint=method_checkpoint("vae", "{dataset}", "{variant}", "{seed}"),
        log_csv=method_run_file("vae", "{dataset}", "{variant}", "{seed}", "train_log.csv"),
        config=method_run_file("vae", "{dataset}", "{variant}", "{seed}", "config.json"),
        record=method_run_file("vae", "{dataset}", "{variant}", "{seed}", "train.json"),
    log:
        "logs/vae/train/{dataset}/{variant}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/train_vae/{dataset}/{variant}/{seed}.tsv"
    wildcard_constraints:
        variant="|".join(VAE_VARIANTS),
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        architecture=as_json(config["vae"]["architecture"]),
        train_config=lambda w: as_json(method_train_section("vae", w.seed)),
        aiqn_vae=lambda w: (
            f"--aiqn-vae-config {shlex.quote(as_json(config['vae']['aiqn_vae']))}" if w.variant == "aiqn-vae" else ""
        ),
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} train-vae --dataset {wildcards.dataset} --data {input.train}"
        " --variant {wildcards.variant} --architecture {params.architecture:q} --train-config {params.train_config:q}"
        " {params.aiqn_vae} --state-dir state/vae/{wildcards.dataset}/{wildcards.variant}/seed-{wildcards.seed}"
        " --out-dir results/vae/{wildcards.dataset}/{wildcards.variant}/seed-{wildcards.seed} --device {params.device}"
        " --no-progress > {log} 2>&1"


# Sampling and scoring of every row of one seed in one process (`aiqn chain`, as rules/score.smk): per
# row `sample-vae`, then the shared `evaluate` verb: the same FID / IS, labels and provenance record as
# Table 1's. One job per seed, not per row: a job's start-up (~3 s) paid 3 times, not 9.
rule score_vae:
    input:
        unpack(lambda w: scoring_inputs(w.dataset)),
        checkpoints=lambda w: [method_checkpoint("vae", w.dataset, v, w.seed) for v in VAE_VARIANTS],
    output:
        samples=[method_samples("vae", "{dataset}", row, "{seed}") for row in VAE_ROWS],
        meta=[f"{method_samples('vae', '{dataset}', row, '{seed}')}.json" for row in VAE_ROWS],
        metrics=[method_metrics("vae", "{dataset}", row, "{seed}") for row in VAE_ROWS],
    log:
        "logs/vae/score/{dataset}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/score_vae/{dataset}/{seed}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        calls=lambda w: vae_score_calls(w.dataset, w.seed),
    shell:
        CHAIN_SHELL


rule aiqn_vae:
    input:
        metrics=method_metric_files("vae", VAE_ROWS)
        + [real_data_metrics(dataset) for dataset in method_datasets("vae")],
        paper="paper/aiqn_vae.csv",
    output:
        csv=report("reports/tables/aiqn_vae.csv", caption="../report/aiqn_vae.rst", category="AIQN-VAE"),
        md="reports/tables/aiqn_vae.md",
        tex="reports/tables/aiqn_vae.tex",
        provenance="reports/provenance/aiqn_vae.json",
    log:
        "logs/vae/table.log",
    benchmark:
        "logs/benchmarks/aiqn_vae.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        title="AIQN-VAE (appendix, Figure 9 analogue)",
        caption=(
            "Sample quality of the VAE from its N(0, I) prior, of the AIQN-VAE (tau -> AIQN -> decoder) and "
            "of the AIQN-VAE's decoder fed from the N(0, I) prior instead of its AIQN, each at its final "
            "step, EMA weights (FID lower is better, IS higher is better); each column header is the metric "
            "label, which names the feature extractor and sample counts; the real test split is the floor."
        ),
        paper_heading="Paper (Ostrovski et al. 2018, appendix, Figure 9: CelebA 64x64 samples only, no FID or IS)",
    shell:
        method_table_shell("aiqn_vae")


rule aiqn_vae_figures:
    input:
        real=rules.prepare_data.output.test,
        samples=lambda w: [method_samples("vae", w.dataset, row, figure_seed()) for row in VAE_ROWS],
        train_logs=lambda w: [
            f"{method_run_dir('vae', w.dataset, variant, figure_seed())}/{name}"
            for variant in VAE_VARIANTS
            for name in ("train_log.csv", "config.json")
        ],
    output:
        grid=report(
            "reports/figures/{dataset}_aiqn_vae.png",
            caption="../report/aiqn_vae_samples.rst",
            category="AIQN-VAE",
            subcategory="{dataset}",
        ),
        record="reports/figures/{dataset}_aiqn_vae.png.json",
        loss=report(
            "reports/figures/{dataset}_aiqn_vae_loss.png",
            caption="../report/aiqn_vae_loss.rst",
            category="AIQN-VAE",
            subcategory="{dataset}",
        ),
    log:
        "logs/vae/figures_{dataset}.log",
    benchmark:
        "logs/benchmarks/aiqn_vae_figures/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        samples=lambda w: " ".join(
            shlex.quote(f"{VAE_ROWS[row].name}={method_samples('vae', w.dataset, row, figure_seed())}")
            for row in VAE_ROWS
        ),
        train_logs=lambda w: " ".join(
            f"{variant}={method_run_dir('vae', w.dataset, variant, figure_seed())}/train_log.csv"
            for variant in VAE_VARIANTS
        ),
        grid_n=config["report"]["grid_n"],
    shell:
        "python -m aiqn --threads {threads} vae-figures --dataset {wildcards.dataset} --real {input.real}"
        " --samples {params.samples} --train-logs {params.train_logs} --grid-n {params.grid_n}"
        " --grid-out {output.grid} --loss-out {output.loss} > {log} 2>&1"
