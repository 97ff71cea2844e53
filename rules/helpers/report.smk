# Helpers of rules/report.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
def final_checkpoint(dataset, model, seed=None):
    """A model's final checkpoint, of `seed` (default: figure_seed())."""
    seed = figure_seed() if seed is None else seed
    return f"{run_dir(dataset, model, seed)}/ckpt_{final_step(dataset, model)}.pt"


def final_samples(dataset, model, seed=None):
    """The samples of a model's final checkpoint, of `seed` (default: figure_seed())."""
    return samples_path(dataset, model, figure_seed() if seed is None else seed, final_step(dataset, model))


def generative_samples(dataset):
    """name -> final samples (of the figure seed) of every generative model that runs on `dataset`: Table 1's
    models, and the AIQN-VAE's and CQF's rows where their sections list the dataset."""
    samples = {m: final_samples(dataset, m) for m in models_for(dataset)}
    if dataset in method_datasets("vae"):
        samples.update({row: method_samples("vae", dataset, row, figure_seed()) for row in VAE_ROWS})
    if dataset in method_datasets("cqf"):
        samples.update({variant: method_samples("cqf", dataset, variant, figure_seed()) for variant in CQF_VARIANTS})
    return samples


def claim_tables():
    """name -> long CSV of every generated table a claim of paper/claims.yaml can read in this run."""
    tables = {"table1": "reports/tables/table1.csv"}
    for section, table in (("vae", "aiqn_vae"), ("agave", "agave_table1"), ("cqf", "cqf_table1")):
        if method_datasets(section):
            tables[table] = f"reports/tables/{table}.csv"
    return tables
