# Helpers of rules/vae.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
import shlex


from collections import namedtuple


from aiqn.methods.aiqn_vae.verbs import VARIANTS as VAE_VARIANTS  # the two trained models (train-vae --variant)

check_method_datasets("vae")


METHOD_TARGETS.append(lambda: method_report_targets("vae", "aiqn_vae", figures=("aiqn_vae", "aiqn_vae_loss")))


VaeRow = namedtuple("VaeRow", "name variant latents")


# file name of a row -> its name in the table and figure, the checkpoint it decodes with, where
# its latents come from (sample-vae --latents)
VAE_ROWS = {
    "vae": VaeRow("vae", "vae", "prior"),  # the VAE baseline from its N(0, I) prior
    "aiqn-vae": VaeRow("aiqn-vae", "aiqn-vae", "aiqn"),  # tau -> AIQN -> decoder
    "aiqn-vae-gaussian-prior": VaeRow("aiqn-vae (gaussian prior)", "aiqn-vae", "prior"),  # same decoder, N(0, I)
}


def vae_score_calls(dataset, seed):
    """The chained `sample-vae` and `evaluate` calls of every row of VAE_ROWS trained with `seed` (rule score_vae)."""
    sampling = config["sampling"]
    calls = []
    for row, (name, variant, latents) in VAE_ROWS.items():
        ckpt = method_checkpoint("vae", dataset, variant, seed)
        samples = method_samples("vae", dataset, row, seed)
        calls.append(
            f"sample-vae --checkpoint {ckpt} --latents {latents} --n {sampling['n_samples']}"
            f" --seed {sampling['seed']} --batch-size {sampling['batch_size']} --device {config['device']}"
            f" --out {samples}"
        )
        calls.append(
            evaluate_call(
                dataset,
                shlex.quote(name),
                samples,
                ckpt,
                "score_vae",
                f"dataset={dataset},row={row},seed={seed}",
                method_metrics("vae", dataset, row, seed),
            )
        )
    return " :: ".join(calls)
