"""`python -m aiqn VERB`: the commands every Snakemake rule calls (and a user can type).

The parser is built from the shared verbs (`aiqn.pipeline.verbs`) and each method's
(`aiqn.methods.<name>.verbs`, found by `aiqn.methods.method_names`). Each verb parses its
arguments, then calls the package's functions; configs arrive as JSON strings (Snakemake passes
the exact slice of params.yaml a stage reads, so changing a sampling parameter does not retrain).
Nothing imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from aiqn.core.allocator import keep_freed_memory
from aiqn.methods import method_names
from aiqn.pipeline import report_verbs
from aiqn.pipeline import verbs as shared_verbs


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb: the shared ones, then each method's."""
    parser = argparse.ArgumentParser(prog="aiqn", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("-v", "--verbose", action="store_true")
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name, func, help_text):
        sub = verbs.add_parser(name, help=help_text)
        sub.set_defaults(func=func)
        return sub

    shared_verbs.add_verbs(verb)
    report_verbs.add_verbs(verb)
    for name in method_names():
        importlib.import_module(f"aiqn.methods.{name}.verbs").add_verbs(verb)
    chain = verb("chain", None, f"run several verbs in one process, separated by {CHAIN_SEPARATOR!r} "
                 "(one interpreter and one torch import for all: rules/score.smk)")
    chain.add_argument("calls", nargs=argparse.REMAINDER, help=f"VERB ARGS [{CHAIN_SEPARATOR} VERB ARGS ...]")
    return parser


CHAIN_SEPARATOR = "::"


def chained_calls(parser: argparse.ArgumentParser, tokens: list[str]) -> list[argparse.Namespace]:
    """The verb calls of `chain`, each parsed like a command line of its own (all before any runs,
    so a typo in the last call fails before the first does any work)."""
    calls, current = [], []
    for token in [*tokens, CHAIN_SEPARATOR]:
        if token != CHAIN_SEPARATOR:
            current.append(token)
            continue
        if current:
            call = parser.parse_args(current)
            if call.verb == "chain":
                parser.error("chain: a chained call cannot be another chain")
            calls.append(call)
        current = []
    if not calls:
        parser.error(f"chain: no verb given (VERB ARGS [{CHAIN_SEPARATOR} VERB ARGS ...])")
    return calls


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run one verb (or, with `chain`, several in turn)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch  # here, not above: verbs that only read tables and JSON never load torch (~3 s)

        torch.set_num_threads(args.threads)
    keep_freed_memory()  # a small network's step page-faults its activations in again otherwise
    calls = chained_calls(parser, args.calls) if args.verb == "chain" else [args]
    for index, call in enumerate(calls, 1):
        if len(calls) > 1:
            logging.getLogger("aiqn").info("chain: call %d of %d: %s", index, len(calls), call.verb)
        try:
            call.func(call)
        except Exception as error:
            if not isinstance(error, _user_errors()):
                raise
            print(f"aiqn {call.verb}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def _user_errors() -> tuple[type[Exception], ...]:
    """Bad or missing input, or an optional extra that is not installed: reported in one line,
    without a traceback. Imported only when an error occurs: aiqn.data loads every dataset module
    and scikit-learn (about 1.5 s), which verbs that read no data should not pay for."""
    from aiqn.data.download import ChecksumMismatch
    from aiqn.metrics.inception import InceptionUnavailable
    from aiqn.report.provenance import ProvenanceError

    return ProvenanceError, FileNotFoundError, ChecksumMismatch, InceptionUnavailable


if __name__ == "__main__":
    main()
