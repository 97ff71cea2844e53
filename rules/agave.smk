# AGAVE (Lucas & Verbeek 2018; issue 8; docs/agave.md): a VAE whose decoder output f(z) reconstructs
# an auxiliary image and conditions a Gated PixelCNN. Per dataset of agave.datasets and seed of run.seeds
# (every run directory ends in seed-{seed}/):
#   train_agave (one per lambda)   -> results/agave/{dataset}/lambda{lam}/seed-{seed}/ckpt_<steps>.pt (+ log, config,
#                                     train.json)
#   train_agave_ablation           -> results/agave/{dataset}/ablation/seed-{seed}/...: the ablation lambda's model of
#                                     the same seed continued without the auxiliary term (Figure 7)
#   train_agave_baseline           -> results/agave/{dataset}/{baseline,plain}/seed-{seed}/...: a Gated PixelCNN of the decoder's
#                                     size (baseline) and the original ungated PixelCNN of the same sizes (plain),
#                                     trained by the PixelCNN method's `train` verb for the same steps (the matched
#                                     baselines; pixelcnn_train_shell in rules/common.smk)
#   evaluate_agave (one per seed)  -> results/agave/{dataset}/metrics/{name}/seed-{seed}.json: bits/dim on the test
#                                     split (eq. 7 bound; importance-sampled bound with K for the table's lambdas)
#   agave_table1                   -> reports/tables/agave_table1.* (mean and interval over seeds),
#                                     reports/provenance/agave_table1.json
#   agave_figures                  -> reports/figures/{dataset}_agave_{lambda,samples,ablation}.png (first seed)
# Resumable state lives in state/agave/..., never a rule output (as rules/vae.smk).


include: "helpers/agave.smk"


wildcard_constraints:
    lam=AGAVE_LAMBDA,


rule train_agave:
    input:
        train="data/processed/{dataset}/train.npz",
    output:
        checkpoint=agave_checkpoint("{dataset}", "lambda{lam}", "{seed}"),
        log_csv=agave_run_file("{dataset}", "lambda{lam}", "{seed}", "train_log.csv"),
        config=agave_run_file("{dataset}", "lambda{lam}", "{seed}", "config.json"),
        record=agave_run_file("{dataset}", "lambda{lam}", "{seed}", "train.json"),
    log:
        "logs/agave/train/{dataset}/lambda{lam}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/train_agave/{dataset}/{lam}/{seed}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        architecture=as_json(config["agave"]["architecture"]),
        train_config=lambda w: as_json({**method_train_section("agave", w.seed), "kl_weight": float(w.lam)}),
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} train-agave --dataset {wildcards.dataset} --data {input.train}"
        " --architecture {params.architecture:q} --train-config {params.train_config:q}"
        " --state-dir state/agave/{wildcards.dataset}/lambda{wildcards.lam}/seed-{wildcards.seed}"
        " --out-dir results/agave/{wildcards.dataset}/lambda{wildcards.lam}/seed-{wildcards.seed} --device {params.device}"
        " --no-progress > {log} 2>&1"


# Figure 7: the ablation lambda's trained model, continued with eq. 6 (no auxiliary term; KL weight
# agave.ablation.kl_weight, 1 in eq. 6).
rule train_agave_ablation:
    input:
        train="data/processed/{dataset}/train.npz",
        init=lambda w: agave_checkpoint(w.dataset, f"lambda{agave_ablation_lambda()}", w.seed),
    output:
        checkpoint=agave_checkpoint("{dataset}", "ablation", "{seed}"),
        log_csv=agave_run_file("{dataset}", "ablation", "{seed}", "train_log.csv"),
        config=agave_run_file("{dataset}", "ablation", "{seed}", "config.json"),
        record=agave_run_file("{dataset}", "ablation", "{seed}", "train.json"),
    log:
        "logs/agave/train/{dataset}/ablation/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/train_agave_ablation/{dataset}/{seed}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        architecture=as_json(config["agave"]["architecture"]),
        train_config=lambda w: as_json(
            {
                **method_train_section("agave", w.seed),
                "use_aux": False,
                "checkpoint_steps": [],
                "steps": config["agave"]["ablation"]["steps"],
                "kl_weight": float(config["agave"]["ablation"]["kl_weight"]),
            }
        ),
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} train-agave --dataset {wildcards.dataset} --data {input.train}"
        " --architecture {params.architecture:q} --train-config {params.train_config:q} --init-from {input.init}"
        " --state-dir state/agave/{wildcards.dataset}/ablation/seed-{wildcards.seed}"
        " --out-dir results/agave/{wildcards.dataset}/ablation/seed-{wildcards.seed} --device {params.device}"
        " --no-progress > {log} 2>&1"


# The matched baselines: the PixelCNN method's `train` verb (pixelcnn_train_shell, rules/common.smk) on a Gated
# PixelCNN of the AGAVE decoder's size (baseline) and on the original PixelCNN of the same sizes (plain), for
# AGAVE's steps, batch size and EMA (the pipeline's own `pixelcnn` is tuned for FID and overfits in bits/dim).
rule train_agave_baseline:
    input:
        train="data/processed/{dataset}/train.npz",
    output:
        checkpoint=agave_checkpoint("{dataset}", "{baseline}", "{seed}"),
        log_csv=agave_run_file("{dataset}", "{baseline}", "{seed}", "train_log.csv"),
        config=agave_run_file("{dataset}", "{baseline}", "{seed}", "config.json"),
    log:
        "logs/agave/train/{dataset}/{baseline}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/train_agave_baseline/{dataset}/{baseline}/{seed}.tsv"
    wildcard_constraints:
        baseline="|".join(AGAVE_BASELINES),
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        model_config=lambda w: as_json(agave_baseline_model(w.baseline)),
        train_config=lambda w: as_json(agave_baseline_train(w.seed)),
        device=config["device"],
    shell:
        pixelcnn_train_shell("agave/{wildcards.dataset}/{wildcards.baseline}/seed-{wildcards.seed}")


# Every table row's bits/dim of one seed in one process (`aiqn chain` of `evaluate-agave` calls): a job's
# start-up (~3 s) paid once per seed instead of once per row; a lambda that only Figure 4 shows (not in
# the table) is evaluated on its own (evaluate_agave_figure_lambda, below).
rule evaluate_agave:
    input:
        checkpoints=lambda w: [agave_checkpoint(w.dataset, name, w.seed) for name in agave_table_rows()],
        test=rules.prepare_data.output.test,
        dataset_meta=rules.prepare_data.output.meta,
    output:
        [method_metrics("agave", "{dataset}", name, "{seed}") for name in agave_table_rows()],
    log:
        "logs/agave/evaluate/{dataset}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate_agave/{dataset}/{seed}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        calls=lambda w: " :: ".join(agave_evaluate_call(w.dataset, name, w.seed) for name in agave_table_rows()),
    shell:
        CHAIN_SHELL


if agave_figure_only_lambdas():

    rule evaluate_agave_figure_lambda:
        input:
            checkpoint=lambda w: agave_checkpoint(w.dataset, f"lambda{w.lam}", w.seed),
            test=rules.prepare_data.output.test,
            dataset_meta=rules.prepare_data.output.meta,
        output:
            method_metrics("agave", "{dataset}", "lambda{lam}", "{seed}"),
        log:
            "logs/agave/evaluate/{dataset}/lambda{lam}/seed-{seed}.log",
        benchmark:
            "logs/benchmarks/evaluate_agave_figure_lambda/{dataset}/{lam}/{seed}.tsv"
        wildcard_constraints:
            lam="|".join(re.escape(lam) for lam in agave_figure_only_lambdas()),
        conda:
            "../envs/aiqn.yaml"
        threads: 1
        resources:
            gpu=1 if uses_gpu() else 0,
        params:
            calls=lambda w: agave_evaluate_call(w.dataset, f"lambda{w.lam}", w.seed),
        shell:
            CHAIN_SHELL


rule agave_table1:
    input:
        metrics=method_metric_files("agave", agave_table_rows()),
        paper="paper/agave_table1.csv",
    output:
        csv=report("reports/tables/agave_table1.csv", caption="../report/agave_table1.rst", category="AGAVE"),
        md="reports/tables/agave_table1.md",
        tex="reports/tables/agave_table1.tex",
        provenance="reports/provenance/agave_table1.json",
    log:
        "logs/agave/table.log",
    benchmark:
        "logs/benchmarks/agave_table1.tsv"
    conda:
        "../envs/aiqn.yaml"
    params:
        title="AGAVE (Lucas & Verbeek 2018, Table 1 analogue)",
        caption=(
            "Bits per dimension on the test split (lower is better) of AGAVE at the chosen lambda(s) and of two "
            "matched baselines, a Gated PixelCNN and the original ungated PixelCNN (van den Oord et al. 2016a), "
            "both with the AGAVE decoder's blocks and widths, trained with the same optimizer for the same steps "
            "(the pipeline's own pixelcnn is tuned for FID and overfits in bits/dim, so it is not the fair "
            "comparison). Each column header says which quantity it is: the exact likelihood (PixelCNNs), the "
            "eq. 7 bound (one z per image) or the importance-sampled bound with K samples (an upper bound on "
            "-log p(x)), and the KL term of the eq. 7 bound; all with EMA weights. The 'no auxiliary loss' row is "
            "Figure 7's ablation: its lambda's model continued without the auxiliary term (its lambda's row is the "
            "start); a lower KL there means the latent lost information."
        ),
        paper_heading=(
            "Paper (Lucas & Verbeek 2018, Table 1: CIFAR-10 test split, bits/dim; "
            "AGAVE: importance-sampled bound, K=150)"
        ),
    shell:
        method_table_shell("agave_table1")


rule agave_figures:
    input:
        metrics=lambda w: [
            method_metrics("agave", w.dataset, f"lambda{lam}", figure_seed()) for lam in agave_figure_lambdas()
        ],
        checkpoint=lambda w: agave_checkpoint(w.dataset, f"lambda{agave_samples_lambda()}", figure_seed()),
        phase1=lambda w: agave_run_file(w.dataset, f"lambda{agave_ablation_lambda()}", figure_seed(), "train_log.csv"),
        phase1_config=lambda w: agave_run_file(
            w.dataset, f"lambda{agave_ablation_lambda()}", figure_seed(), "config.json"
        ),
        phase2=lambda w: agave_run_file(w.dataset, "ablation", figure_seed(), "train_log.csv"),
        phase2_config=lambda w: agave_run_file(w.dataset, "ablation", figure_seed(), "config.json"),
    output:
        lam=report(
            "reports/figures/{dataset}_agave_lambda.png",
            caption="../report/agave_lambda.rst",
            category="AGAVE",
            subcategory="{dataset}",
        ),
        samples=report(
            "reports/figures/{dataset}_agave_samples.png",
            caption="../report/agave_samples.rst",
            category="AGAVE",
            subcategory="{dataset}",
        ),
        ablation=report(
            "reports/figures/{dataset}_agave_ablation.png",
            caption="../report/agave_ablation.rst",
            category="AGAVE",
            subcategory="{dataset}",
        ),
        draws="results/agave/{dataset}/samples.npz",
        record="reports/figures/{dataset}_agave_samples.png.json",
    log:
        "logs/agave/figures_{dataset}.log",
    benchmark:
        "logs/benchmarks/agave_figures/{dataset}.tsv"
    conda:
        "../envs/aiqn.yaml"
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    params:
        metrics=lambda w: " ".join(
            f"{lam}={method_metrics('agave', w.dataset, f'lambda{lam}', figure_seed())}"
            for lam in agave_figure_lambdas()
        ),
        n_latents=config["agave"]["samples"]["n_latents"],
        per_latent=config["agave"]["samples"]["per_latent"],
        seed=config["agave"]["samples"]["seed"],
        method=config["sampling"]["method"],
        device=config["device"],
    shell:
        "python -m aiqn --threads {threads} agave-figures --dataset {wildcards.dataset} --metrics {params.metrics}"
        " --checkpoint {input.checkpoint} --n-latents {params.n_latents} --per-latent {params.per_latent}"
        " --seed {params.seed} --method {params.method} --device {params.device} --samples-out {output.draws}"
        " --phase1-log {input.phase1} --phase2-log {input.phase2} --lambda-out {output.lam}"
        " --samples-figure {output.samples} --ablation-out {output.ablation} > {log} 2>&1"
