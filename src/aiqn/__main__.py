"""`python -m aiqn VERB ...`: the entry point every Snakemake rule calls."""

from aiqn.cli import main

if __name__ == "__main__":
    main()
