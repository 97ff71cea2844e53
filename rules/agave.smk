# AGAVE (Lucas & Verbeek 2018; issue 8; docs/agave.md): a VAE whose decoder output f(z) reconstructs
# an auxiliary image and conditions a Gated PixelCNN. Per dataset of agave.datasets:
#   train_agave (one per lambda)   -> results/agave/{dataset}/lambda{lam}/ckpt_<steps>.pt (+ log, config, train.json)
#   train_agave_ablation           -> results/agave/{dataset}/ablation/...: the ablation lambda's model continued
#                                     without the auxiliary term (Figure 7)
#   train_agave_baseline           -> results/agave/{dataset}/{baseline,plain}/...: a Gated PixelCNN of the decoder's
#                                     size (baseline) and the original ungated PixelCNN of the same sizes (plain),
#                                     trained by the `train` verb for the same steps (the matched baselines)
#   evaluate_agave                 -> results/agave/{dataset}/metrics/{name}.json: bits/dim on the test split
#                                     (eq. 7 bound; importance-sampled bound with K for the table's lambdas)
#   agave_table1                   -> reports/tables/agave_table1.*, reports/provenance/agave_table1.json
#   agave_figures                  -> reports/figures/{dataset}_agave_{lambda,samples,ablation}.png
# Resumable state lives in state/agave/..., never a rule output (as rules/vae.smk).


def agave_section():
    return config.get("agave", {})


def agave_datasets():
    return agave_section().get("datasets", [])


def check_agave_config():
    """Fail at parse time, naming the key, when agave.datasets names something params.yaml lacks."""
    for name in agave_datasets():
        if "_" in name:
            raise ValueError(f"params.yaml: agave.datasets has {name!r}, a name with '_'; dataset names use "
                             "letters, digits and '-' only")
        if name not in config["datasets"]:
            raise ValueError(f"params.yaml: agave.datasets lists {name!r} but datasets.{name} is missing")


check_agave_config()


def lam_name(value):
    """A lambda as it appears in file names and labels: 2 -> '2', 0.5 -> '0.5'."""
    return f"{float(value):g}"


def agave_table_lambdas():
    return [lam_name(v) for v in agave_section().get("table_lambdas", [])]


def agave_figure_lambdas():
    return [lam_name(v) for v in agave_section().get("figure_lambdas", [])]


def agave_samples_lambda():
    return lam_name(agave_section()["samples"]["lambda"])


def agave_ablation_lambda():
    return lam_name(agave_section()["ablation"]["lambda"])


def agave_train_section():
    section = dict(agave_section()["train"])
    section.setdefault("seed", config.get("seed", 0))
    return section


def agave_steps():
    return agave_section().get("train", {}).get("steps", 0)


def agave_checkpoint(dataset, run):
    """The published final checkpoint of a run: lambda{lam} or ablation (steps in the name)."""
    steps = agave_section().get("ablation", {}).get("steps", 0) if run == "ablation" else agave_steps()
    return f"results/agave/{dataset}/{run}/ckpt_{steps:07d}.pt"


# The matched baselines of the table: run name -> whether its PixelCNN is gated.
AGAVE_BASELINES = {"baseline": True, "plain": False}


def agave_baseline_checkpoint(dataset, baseline="baseline"):
    return f"results/agave/{dataset}/{baseline}/ckpt_{agave_steps():07d}.pt"


def agave_baseline_model(baseline):
    """A matched baseline: the AGAVE decoder's sizes, categorical head, no conditioning; the Gated
    PixelCNN (`baseline`) or the original PixelCNN of van den Oord et al. 2016a (`plain`)."""
    arch = agave_section()["architecture"]
    keys = ("blocks", "filter_size", "planes", "output_planes")
    model = {"head": "categorical", **{key: arch[key] for key in keys}}
    if not AGAVE_BASELINES[baseline]:
        model["gated"] = False
    return model


def agave_baseline_train():
    """aiqn.methods.pixeliqn.train.TrainConfig of the baseline: AGAVE's steps, batch, EMA and seed, the baseline's optimizer."""
    train = agave_train_section()
    section = {key: train[key] for key in ("steps", "batch_size", "ema_rate", "seed") if key in train}
    section.update(agave_section().get("baseline", {}))
    section["checkpoint_steps"] = [train["steps"]]
    return section


def agave_metric_name(run):
    return run if run in AGAVE_BASELINES else f"lambda{run}"


def agave_targets():
    """The AGAVE report files for `rule all` (none when agave.datasets is empty)."""
    if not agave_datasets():
        return []
    targets = [f"reports/tables/agave_table1.{ext}" for ext in ("csv", "md", "tex")]
    targets.append("reports/provenance/agave_table1.json")
    for dataset in agave_datasets():
        targets += [f"reports/figures/{dataset}_agave_{kind}.png" for kind in ("lambda", "samples", "ablation")]
    return targets


wildcard_constraints:
    lam=r"[0-9]+(\.[0-9]+)?",


rule train_agave:
    input:
        train="data/processed/{dataset}/train.npz",
    output:
        checkpoint=f"results/agave/{{dataset}}/lambda{{lam}}/ckpt_{agave_steps():07d}.pt",
        log_csv="results/agave/{dataset}/lambda{lam}/train_log.csv",
        config="results/agave/{dataset}/lambda{lam}/config.json",
        record="results/agave/{dataset}/lambda{lam}/train.json",
    params:
        architecture=as_json(agave_section().get("architecture", {})),
        train_config=lambda w: as_json({**agave_train_section(), "kl_weight": float(w.lam)}),
        device=config.get("device", "auto"),
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/agave/train/{dataset}/lambda{lam}.log",
    benchmark:
        "logs/agave/bench/train_{dataset}_lambda{lam}.tsv"
    shell:
        "{PYTHON} --threads {threads} train-agave --dataset {wildcards.dataset} --data {input.train}"
        " --architecture {params.architecture:q} --train-config {params.train_config:q}"
        " --state-dir state/agave/{wildcards.dataset}/lambda{wildcards.lam}"
        " --out-dir results/agave/{wildcards.dataset}/lambda{wildcards.lam} --device {params.device}"
        " --no-progress > {log} 2>&1"


# Figure 7: the ablation lambda's trained model, continued with eq. 6 (no auxiliary term; KL weight
# agave.ablation.kl_weight, 1 in eq. 6).
rule train_agave_ablation:
    input:
        train="data/processed/{dataset}/train.npz",
        init=lambda w: agave_checkpoint(w.dataset, f"lambda{agave_ablation_lambda()}"),
    output:
        checkpoint=agave_checkpoint("{dataset}", "ablation"),
        log_csv="results/agave/{dataset}/ablation/train_log.csv",
        config="results/agave/{dataset}/ablation/config.json",
        record="results/agave/{dataset}/ablation/train.json",
    params:
        architecture=as_json(agave_section().get("architecture", {})),
        train_config=lambda w: as_json({**agave_train_section(), "use_aux": False, "checkpoint_steps": [],
                                        "steps": agave_section()["ablation"]["steps"],
                                        "kl_weight": float(agave_section()["ablation"].get("kl_weight", 1.0))}),
        device=config.get("device", "auto"),
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/agave/train/{dataset}/ablation.log",
    benchmark:
        "logs/agave/bench/train_{dataset}_ablation.tsv"
    shell:
        "{PYTHON} --threads {threads} train-agave --dataset {wildcards.dataset} --data {input.train}"
        " --architecture {params.architecture:q} --train-config {params.train_config:q} --init-from {input.init}"
        " --state-dir state/agave/{wildcards.dataset}/ablation"
        " --out-dir results/agave/{wildcards.dataset}/ablation --device {params.device}"
        " --no-progress > {log} 2>&1"


# The matched baselines: the pipeline's `train` verb (aiqn.methods.pixeliqn.train.train) on a Gated PixelCNN of the
# AGAVE decoder's size (baseline) and on the original PixelCNN of the same sizes (plain), for AGAVE's
# steps, batch size and EMA (the pipeline's own `pixelcnn` is tuned for FID and overfits in bits/dim).
rule train_agave_baseline:
    input:
        train="data/processed/{dataset}/train.npz",
    output:
        checkpoint=agave_baseline_checkpoint("{dataset}", "{baseline}"),
        log_csv="results/agave/{dataset}/{baseline}/train_log.csv",
        config="results/agave/{dataset}/{baseline}/config.json",
    wildcard_constraints:
        baseline="|".join(AGAVE_BASELINES),
    params:
        model_config=lambda w: as_json(agave_baseline_model(w.baseline)),
        train_config=as_json(agave_baseline_train()) if agave_datasets() else "{}",
        device=config.get("device", "auto"),
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/agave/train/{dataset}/{baseline}.log",
    benchmark:
        "logs/agave/bench/train_{dataset}_{baseline}.tsv"
    shell:
        "{PYTHON} --threads {threads} train --dataset {wildcards.dataset} --data {input.train}"
        " --model-config {params.model_config:q} --train-config {params.train_config:q}"
        " --state-dir state/agave/{wildcards.dataset}/{wildcards.baseline}"
        " --out-dir results/agave/{wildcards.dataset}/{wildcards.baseline}"
        " --device {params.device} --no-progress > {log} 2>&1"


def agave_eval_k(name):
    """K of the importance-sampled bound: agave.evaluation.importance_k for the table's lambdas, else 0."""
    if name.startswith("lambda") and name[len("lambda"):] in agave_table_lambdas():
        return agave_section()["evaluation"]["importance_k"]
    return 0


def agave_eval_checkpoint(dataset, name):
    return agave_baseline_checkpoint(dataset, name) if name in AGAVE_BASELINES else agave_checkpoint(dataset, name)


AGAVE_BASELINE_LABELS = {"baseline": "Gated PixelCNN (matched baseline)", "plain": "PixelCNN (matched baseline)"}


def agave_model_label(name):
    """The row name of a metrics file in the table and figures."""
    return AGAVE_BASELINE_LABELS.get(name, f"AGAVE (lambda={name[len('lambda'):]})")


rule evaluate_agave:
    input:
        checkpoint=lambda w: agave_eval_checkpoint(w.dataset, w.name),
        test=rules.prepare_data.output.test,
        dataset_meta=rules.prepare_data.output.meta,
    output:
        "results/agave/{dataset}/metrics/{name}.json",
    wildcard_constraints:
        name=r"baseline|plain|lambda[0-9]+(\.[0-9]+)?",
    params:
        model=lambda w: agave_model_label(w.name),
        k=lambda w: agave_eval_k(w.name),
        elbo_samples=agave_section().get("evaluation", {}).get("elbo_samples", 1),
        seed=agave_section().get("evaluation", {}).get("seed", 0),
        batch_size=agave_section().get("evaluation", {}).get("batch_size", 100),
        k_batch=agave_section().get("evaluation", {}).get("k_batch", 50),
        device=config.get("device", "auto"),
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/agave/evaluate/{dataset}/{name}.log",
    benchmark:
        "logs/agave/bench/evaluate_{dataset}_{name}.tsv"
    shell:
        "{PYTHON} --threads {threads} evaluate-agave --dataset {wildcards.dataset} --model {params.model:q}"
        " --checkpoint {input.checkpoint} --test {input.test} --dataset-meta {input.dataset_meta}"
        " --k {params.k} --elbo-samples {params.elbo_samples} --seed {params.seed} --batch-size {params.batch_size}"
        " --k-batch {params.k_batch} --device {params.device} --rule evaluate_agave"
        " --wildcards dataset={wildcards.dataset},name={wildcards.name} --out {output} > {log} 2>&1"


rule agave_table1:
    input:
        metrics=[f"results/agave/{dataset}/metrics/{name}.json" for dataset in agave_datasets()
                 for name in [*AGAVE_BASELINES] + [f"lambda{lam}" for lam in agave_table_lambdas()]],
        paper="paper/agave_table1.csv",
    output:
        csv=report("reports/tables/agave_table1.csv", caption="../report/agave_table1.rst", category="AGAVE"),
        md="reports/tables/agave_table1.md",
        tex="reports/tables/agave_table1.tex",
        provenance="reports/provenance/agave_table1.json",
    params:
        title="AGAVE (Lucas & Verbeek 2018, Table 1 analogue)",
        caption=(
            "Bits per dimension on the test split (lower is better) of AGAVE at the chosen lambda(s) and of two "
            "matched baselines, a Gated PixelCNN and the original ungated PixelCNN (van den Oord et al. 2016a), "
            "both with the AGAVE decoder's blocks and widths, trained with the same optimizer for the same steps "
            "(the pipeline's own pixelcnn is tuned for FID and overfits in bits/dim, so it is not the fair "
            "comparison). Each column header says which quantity it is: the exact likelihood (PixelCNNs), the "
            "eq. 7 bound (one z per image) or the importance-sampled bound with K samples (an upper bound on "
            "-log p(x)), and the KL term of the eq. 7 bound; all with EMA weights."
        ),
        paper_heading=("Paper (Lucas & Verbeek 2018, Table 1: CIFAR-10 test split, bits/dim; "
                       "AGAVE: importance-sampled bound, K=150)"),
    log:
        "logs/agave/table.log",
    benchmark:
        "logs/agave/bench/table.tsv"
    shell:
        "{PYTHON} --threads {threads} table --name agave_table1 --title {params.title:q} --caption {params.caption:q}"
        " --paper-heading {params.paper_heading:q} --metrics {input.metrics} --paper {input.paper}"
        " --out-dir reports/tables --provenance {output.provenance} > {log} 2>&1"


rule agave_figures:
    input:
        metrics=lambda w: [f"results/agave/{w.dataset}/metrics/lambda{lam}.json" for lam in agave_figure_lambdas()],
        checkpoint=lambda w: agave_checkpoint(w.dataset, f"lambda{agave_samples_lambda()}"),
        phase1=lambda w: f"results/agave/{w.dataset}/lambda{agave_ablation_lambda()}/train_log.csv",
        phase1_config=lambda w: f"results/agave/{w.dataset}/lambda{agave_ablation_lambda()}/config.json",
        phase2="results/agave/{dataset}/ablation/train_log.csv",
        phase2_config="results/agave/{dataset}/ablation/config.json",
    output:
        lam=report("reports/figures/{dataset}_agave_lambda.png", caption="../report/agave_lambda.rst",
                   category="AGAVE", subcategory="{dataset}"),
        samples=report("reports/figures/{dataset}_agave_samples.png", caption="../report/agave_samples.rst",
                       category="AGAVE", subcategory="{dataset}"),
        ablation=report("reports/figures/{dataset}_agave_ablation.png", caption="../report/agave_ablation.rst",
                        category="AGAVE", subcategory="{dataset}"),
        draws="results/agave/{dataset}/samples.npz",
        record="reports/figures/{dataset}_agave_samples.png.json",
    params:
        metrics=lambda w: " ".join(f"{lam}=results/agave/{w.dataset}/metrics/lambda{lam}.json"
                                   for lam in agave_figure_lambdas()),
        n_latents=agave_section().get("samples", {}).get("n_latents", 8),
        per_latent=agave_section().get("samples", {}).get("per_latent", 6),
        seed=agave_section().get("samples", {}).get("seed", 1),
        method=config["sampling"].get("method", "cached"),
        device=config.get("device", "auto"),
    threads: 1
    resources:
        gpu=1 if uses_gpu() else 0,
    log:
        "logs/agave/figures_{dataset}.log",
    benchmark:
        "logs/agave/bench/figures_{dataset}.tsv"
    shell:
        "{PYTHON} --threads {threads} agave-figures --dataset {wildcards.dataset} --metrics {params.metrics}"
        " --checkpoint {input.checkpoint} --n-latents {params.n_latents} --per-latent {params.per_latent}"
        " --seed {params.seed} --method {params.method} --device {params.device} --samples-out {output.draws}"
        " --phase1-log {input.phase1} --phase2-log {input.phase2} --lambda-out {output.lam}"
        " --samples-figure {output.samples} --ablation-out {output.ablation} > {log} 2>&1"
