# Helpers of rules/cqf.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
import shlex


from aiqn.methods.cqf.verbs import VARIANTS as CQF_VARIANTS  # train-cqf --variant, in the paper's order

check_method_datasets("cqf")


METHOD_TARGETS.append(lambda: method_report_targets("cqf", "cqf_table1", figures=("cqf_samples", "cqf_curves")))


def cqf_score_calls(dataset, seed):
    """The chained `sample-cqf` and `evaluate` calls of every variant trained with `seed` (rule score_cqf)."""
    sampling, evaluation = config["sampling"], config["cqf"]["evaluation"]
    calls = []
    for variant in CQF_VARIANTS:
        ckpt = method_checkpoint("cqf", dataset, variant, seed)
        samples = method_samples("cqf", dataset, variant, seed)
        # the full density model's noise is off by default (and never for gan, which has none)
        noise = " --decoder-noise" if config["cqf"]["sampling"]["decoder_noise"] and variant != "gan" else ""
        calls.append(
            f"sample-cqf --checkpoint {ckpt} --n {sampling['n_samples']} --seed {sampling['seed']}"
            f" --batch-size {sampling['batch_size']}{noise} --device {config['device']} --out {samples}"
        )
        calls.append(
            evaluate_call(
                dataset,
                variant,
                samples,
                ckpt,
                "score_cqf",
                f"dataset={dataset},variant={variant},seed={seed}",
                method_metrics("cqf", dataset, variant, seed),
                extra=f"--importance-samples {evaluation['importance_samples']} --bpd-seed {evaluation['seed']}",
            )
        )
    return " :: ".join(calls)
