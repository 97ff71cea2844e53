# Helpers of rules/cqf.smk (its input functions, names and constants): Snakemake's lint wants
# functions apart from rules.
import shlex


from aiqn.methods.cqf.verbs import VARIANTS as CQF_VARIANTS  # train-cqf --variant, in the paper's order

check_method_datasets("cqf")


METHOD_TARGETS.append(lambda: method_report_targets("cqf", "cqf_table1", figures=("cqf_samples", "cqf_curves")))
