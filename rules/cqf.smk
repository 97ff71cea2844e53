# CQF (Shmelkov et al. 2018, "Coverage and quality driven training of generative image models";
# issue 8; docs/cqf.md): the Table 1 ablation. Per dataset of cqf.datasets and seed of run.seeds, four variants of one
# generator: gan (quality loss only), vae (coverage loss only), cq (both), cqf (both, and an NVP flow
# between the decoder's feature space and the pixels):
#   train_cqf     -> results/cqf/{dataset}/{variant}/seed-{seed}/ckpt_<steps>.pt, train_log.csv, config.json,
#                    train.json (resumable state in state/cqf/{dataset}/{variant}/seed-{seed}/, never a rule output)
#   score_cqf     -> (one process per seed, `aiqn chain`) results/cqf/{dataset}/samples/{variant}/seed-{seed}.npz (+ .npz.json):
#                    G(z), EMA weights; and results/cqf/{dataset}/metrics/{variant}/seed-{seed}.json: FID / IS by the
#                    `evaluate` verb (same
#                    extractor, reference statistics, labels and provenance as Table 1) and, for vae, cq
#                    and cqf, bits/dim on the test split (eq. 6 bound with the flow's log-determinant)
#   cqf_table1    -> reports/tables/cqf_table1.{csv,md,tex} (mean and interval over seeds),
#                    reports/provenance/cqf_table1.json
#   cqf_figures   -> reports/figures/{dataset}_cqf_samples.png (+ .png.json), {dataset}_cqf_curves.png (first seed)
# Everything lives under results/cqf/, which no other rule's pattern matches.


include: "helpers/cqf.smk"


rule train_cqf:
    input:
        train="data/processed/{dataset}/train.npz",
    output:
        checkpoint=method_checkpoint("cqf", "{dataset}", "{variant}", "{seed}"),
        log_csv=method_run_file("cqf", "{dataset}", "{variant}", "{seed}", "train_log.csv"),
        config=method_run_file("cqf", "{dataset}", "{variant}", "{seed}", "config.json"),
        record=method_run_file("cqf", "{dataset}", "{variant}", "{seed}", "train.json"),
    log:
        "logs/cqf/train/{dataset}/{variant}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/train_cqf/{dataset}/{variant}/{seed}.tsv"
    wildcard_constraints:
        variant="|".join(CQF_VARIANTS),
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        architecture=as_json(config["cqf"]["architecture"]),
        train_config=lambda w: as_json(method_train_section("cqf", w.seed)),
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} train-cqf --dataset {wildcards.dataset} --data {input.train}"
        " --variant {wildcards.variant} --architecture {params.architecture:q} --train-config {params.train_config:q}"
        " --state-dir state/cqf/{wildcards.dataset}/{wildcards.variant}/seed-{wildcards.seed}"
        " --out-dir results/cqf/{wildcards.dataset}/{wildcards.variant}/seed-{wildcards.seed} --device {params.device}"
        " --no-progress > {log} 2>&1"


# Sampling and scoring of every variant of one seed in one process (`aiqn chain`, as rules/score.smk):
# per variant `sample-cqf`, then the shared `evaluate` verb: the same FID / IS, labels and provenance
# record as Table 1's; for a CQF checkpoint it adds bits/dim (aiqn.methods.cqf.verbs.cqf_bits_per_dim_metrics)
# unless the variant is gan. One job per seed, not per variant: a job's start-up (~3 s) paid 3 times, not 12.
rule score_cqf:
    input:
        unpack(lambda w: scoring_inputs(w.dataset)),
        checkpoints=lambda w: [method_checkpoint("cqf", w.dataset, v, w.seed) for v in CQF_VARIANTS],
    output:
        samples=[method_samples("cqf", "{dataset}", v, "{seed}") for v in CQF_VARIANTS],
        meta=[f"{method_samples('cqf', '{dataset}', v, '{seed}')}.json" for v in CQF_VARIANTS],
        metrics=[method_metrics("cqf", "{dataset}", v, "{seed}") for v in CQF_VARIANTS],
    log:
        "logs/cqf/score/{dataset}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/score_cqf/{dataset}/{seed}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        calls=lambda w: cqf_score_calls(w.dataset, w.seed),
    shell:
        CHAIN_SHELL


rule cqf_table1:
    input:
        metrics=method_metric_files("cqf", CQF_VARIANTS)
        + [real_data_metrics(dataset) for dataset in method_datasets("cqf")],
        paper="paper/cqf_table1.csv",
    output:
        csv=report("reports/tables/cqf_table1.csv", caption="../report/cqf_table1.rst", category="CQF"),
        md="reports/tables/cqf_table1.md",
        tex="reports/tables/cqf_table1.tex",
        provenance="reports/provenance/cqf_table1.json",
    log:
        "logs/cqf/table.log",
    benchmark:
        "logs/benchmarks/cqf_table1.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        title="CQF Table 1 (analogue): coverage and quality driven training, ablation",
        caption=(
            "gan: quality loss only (eq. 7); vae: coverage loss only (eq. 6, factorized Gaussian decoder); cq: both "
            "losses; cqf: both losses and an NVP flow between the decoder's feature space and the pixels. Each at "
            "its final step, EMA weights, samples G(z). FID lower is better, IS higher is better, bits/dim lower is "
            "better (a bound: the label names it; the gan variant has no likelihood). Each column header is the "
            "metric label, which names the feature extractor, sample counts, split and bound; the real test split "
            "is the floor."
        ),
        paper_heading="Paper (Shmelkov et al. 2018, Table 1: CIFAR-10, Inception-v3)",
    shell:
        method_table_shell("cqf_table1")


rule cqf_figures:
    input:
        real=rules.prepare_data.output.test,
        samples=lambda w: [method_samples("cqf", w.dataset, variant, figure_seed()) for variant in CQF_VARIANTS],
        samples_meta=lambda w: [
            f"{method_samples('cqf', w.dataset, variant, figure_seed())}.json" for variant in CQF_VARIANTS
        ],
        train_logs=lambda w: [
            f"{method_run_dir('cqf', w.dataset, variant, figure_seed())}/{name}"
            for variant in CQF_VARIANTS
            for name in ("train_log.csv", "config.json")
        ],
    output:
        grid=report(
            "reports/figures/{dataset}_cqf_samples.png",
            caption="../report/cqf_samples.rst",
            category="CQF",
            subcategory="{dataset}",
        ),
        record="reports/figures/{dataset}_cqf_samples.png.json",
        curves=report(
            "reports/figures/{dataset}_cqf_curves.png",
            caption="../report/cqf_curves.rst",
            category="CQF",
            subcategory="{dataset}",
        ),
    log:
        "logs/cqf/figures_{dataset}.log",
    benchmark:
        "logs/benchmarks/cqf_figures/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        samples=lambda w: " ".join(
            shlex.quote(f"{variant}={method_samples('cqf', w.dataset, variant, figure_seed())}")
            for variant in CQF_VARIANTS
        ),
        train_logs=lambda w: " ".join(
            f"{variant}={method_run_dir('cqf', w.dataset, variant, figure_seed())}/train_log.csv"
            for variant in CQF_VARIANTS
        ),
        grid_n=config["report"]["grid_n"],
    shell:
        "python -m aiqn --threads {threads} cqf-figures --dataset {wildcards.dataset} --real {input.real}"
        " --samples {params.samples} --train-logs {params.train_logs} --grid-n {params.grid_n}"
        " --grid-out {output.grid} --loss-out {output.curves} > {log} 2>&1"
