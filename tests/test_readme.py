"""The README and the docs index (issue 30): the README stays short, shows both commands on its
first screen, and names only things that exist; docs/README.md links every file under docs/.

What counts as a name the README gives:
- a relative markdown link `[text](target)`: the target exists, and its `#anchor`, if any, is a
  heading of the Markdown file it points to (GitHub's heading slugs);
- a path in backticks (inline, or a word of a fenced code block, comments left out): a word with a
  `/` in it, or a top-level file name such as `params.yaml`. `{a,b}` stands for both names and
  `<name>` for any name. A path under a folder the pipeline writes (the ignored folders of
  .gitignore: `reports/`, `results/`, ...) does not exist in a fresh clone, so it must match an
  output path a rules file or the Snakefile spells out (its `{wildcards}` match any name) or be an
  entry of .gitignore; any other path must exist in the tree;
- `python -m aiqn VERB`: VERB is one of the verbs `python -m aiqn --help` lists.
The README also carries no date (YYYY-MM-DD): dated timings and migration notes belong in docs/.

docs/README.md links every file under docs/: directly, or through the README.md of a folder above
the file, which docs/README.md links and which links the file (docs/runs/README.md lists its runs).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOCS_INDEX = DOCS / "README.md"

MAX_LINES = 120
FIRST_SCREEN = 30
COMMANDS = ("bash scripts/setup.sh && snakemake --cores all", "bash scripts/setup.sh && python -m pytest")

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
PATH_WORD = re.compile(r"^(?:\./)?[\w.<>{},*-]+(?:/[\w.<>{},*-]*)+$")
TOP_LEVEL_FILE = re.compile(r"^[\w-][\w.-]*\.(?:md|ya?ml|toml|py|sh|smk|cfg|ini|txt|lock)$|^Snakefile$")
AIQN_VERB = re.compile(r"python -m aiqn((?:\s+--?[\w-]+(?:\s+\d+)?)*)\s+([a-z][\w-]*)")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(text: str) -> set[str]:
    text = FENCE.sub("", text)
    return {github_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", text)) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def link_problems(text: str, base: Path) -> list[str]:
    """Every relative link of `text` (a page in folder `base`) that names no file, or no heading of it."""
    problems = []
    for target in relative_links(text):
        path_part, _, anchor = target.partition("#")
        path = (base / path_part).resolve()
        if path_part and not path.exists():
            problems.append(f"link to a missing file: {target}")
        elif anchor and (not path_part or path.suffix == ".md"):
            page = path.read_text(encoding="utf-8") if path_part else text
            if anchor not in anchors_of(page):
                problems.append(f"link to a missing heading: {target}")
    return problems


def expand_braces(word: str) -> list[str]:
    """`a.{csv,md}` -> [a.csv, a.md]; several groups multiply; `{}`-free words are themselves."""
    groups = re.split(r"(\{[^{}]*\})", word)
    options = [g[1:-1].split(",") if g.startswith("{") and g.endswith("}") else [g] for g in groups]
    return ["".join(choice) for choice in itertools.product(*options)]


def code_words(text: str) -> list[str]:
    """Words of inline code spans and of fenced code blocks (a `#` comment in a block left out)."""
    words = []
    for block in FENCE.findall(text):
        for line in block.splitlines()[1:-1]:
            words += re.split(r"\s+", line.split(" #")[0].strip())
    for span in INLINE_CODE.findall(FENCE.sub("", text)):
        words += span.split()
    return [w.strip("\"'();,") for w in words if w]


def named_paths(text: str) -> list[str]:
    paths = []
    for word in code_words(text):
        if "://" in word or "=" in word or word.startswith("-"):
            continue
        if PATH_WORD.match(word) or TOP_LEVEL_FILE.match(word):
            paths.append(word)
    return paths


def generated_roots() -> tuple[list[str], set[str]]:
    """The folders the pipeline writes, and the exact entries, from .gitignore's rooted lines."""
    roots, entries = [], set()
    for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("/") and not line.startswith("!"):
            entry = line.strip("/").rstrip("*").rstrip("/")
            entries.add(entry)
            roots.append(entry + "/")
    return roots, entries


def rule_output_patterns() -> list[re.Pattern]:
    """Every quoted path the Snakefile and rules spell out, as a regex: a `{wildcard}` matches any name."""
    sources = [ROOT / "Snakefile", *sorted((ROOT / "rules").rglob("*.smk"))]
    patterns = []
    for source in sources:
        for literal in re.findall(r"[\"']([\w./{}<>-]+/[\w./{}<>-]+)[\"']", source.read_text(encoding="utf-8")):
            parts = re.split(r"\{+[^{}]*\}+", literal)
            patterns.append(re.compile("[^/]+".join(re.escape(p) for p in parts) + "/?"))
    return patterns


def path_problems(text: str) -> list[str]:
    roots, entries = generated_roots()
    patterns = None
    problems = []
    for word in named_paths(text):
        for name in expand_braces(word.removeprefix("./")):
            if any(name.startswith(root) or name == root.rstrip("/") for root in roots):
                concrete = re.sub(r"<[^<>]*>", "X", name).rstrip("/")
                if concrete in entries:
                    continue
                patterns = patterns if patterns is not None else rule_output_patterns()
                if not any(p.fullmatch(concrete) for p in patterns):
                    problems.append(f"{word}: no rule writes {name}")
            else:
                pattern = re.sub(r"<[^<>]*>", "*", name)
                if not list(ROOT.glob(pattern.rstrip("/"))):
                    problems.append(f"{word}: {name} is not in the tree")
    return problems


def cli_verbs() -> set[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "aiqn", "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    choices = re.search(r"\{([\w,-]+)\}", done.stdout)
    assert choices, done.stdout
    return set(choices.group(1).split(","))


def verb_problems(text: str, verbs: set[str]) -> list[str]:
    named = [m.group(2) for m in AIQN_VERB.finditer(text)]
    return [f"python -m aiqn {v}: not a verb of python -m aiqn --help" for v in named if v not in verbs]


def readme_problems(text: str, verbs: set[str]) -> list[str]:
    lines = text.splitlines()
    problems = []
    if len(lines) > MAX_LINES:
        problems.append(f"{len(lines)} lines, more than {MAX_LINES}")
    first_screen = "\n".join(lines[:FIRST_SCREEN])
    problems += [f"not in the first {FIRST_SCREEN} lines: {c}" for c in COMMANDS if c not in first_screen]
    problems += [f"a dated note: {d}" for d in DATE.findall(text)]
    problems += link_problems(text, ROOT)
    problems += path_problems(text)
    problems += verb_problems(text, verbs)
    if not AIQN_VERB.search(text):
        problems.append("names no python -m aiqn verb (the provenance and audit commands)")
    return problems


def index_problems(index: Path, docs: Path) -> list[str]:
    """Files under `docs` that `index` does not link: directly, or through a linked README.md of a
    folder above the file that links it in turn."""
    text = index.read_text(encoding="utf-8")
    problems = link_problems(text, index.parent)
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in relative_links(text) if t.partition("#")[0]}
    for sub_readme in [p for p in linked if p.name == "README.md" and p.parent != index.parent and p.exists()]:
        sub_text = sub_readme.read_text(encoding="utf-8")
        problems += link_problems(sub_text, sub_readme.parent)
        linked |= {(sub_readme.parent / t.partition("#")[0]).resolve()
                   for t in relative_links(sub_text) if t.partition("#")[0]}
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        if path.resolve() != index.resolve() and path.resolve() not in linked:
            problems.append(f"not linked from {index.name}: {path.relative_to(docs)}")
    return problems


@pytest.fixture(scope="module")
def verbs() -> set[str]:
    return cli_verbs()


def test_the_readme_is_short_shows_both_commands_first_and_names_only_what_exists(verbs):
    assert readme_problems(README.read_text(encoding="utf-8"), verbs) == []


def test_the_docs_index_links_every_file_under_docs():
    assert index_problems(DOCS_INDEX, DOCS) == []


def test_the_checks_find_a_missing_file_a_missing_output_a_wrong_verb_and_a_long_readme(verbs, tmp_path):
    good = README.read_text(encoding="utf-8")
    assert "provenance" in verbs and "audit" in verbs
    bad = good + (
        "\nSee [missing](docs/missing.md), [no heading](docs/usage.md#no-such-heading), `scripts/missing.sh`,\n"
        "`reports/tables/nowhere/claims.csv` and `python -m aiqn frobnicate`.\n"
    )
    problems = readme_problems(bad, verbs)
    assert any("docs/missing.md" in p for p in problems)
    assert any("no-such-heading" in p for p in problems)
    assert any("scripts/missing.sh" in p for p in problems)
    assert any("reports/tables/nowhere/claims.csv" in p for p in problems)
    assert any("frobnicate" in p for p in problems)
    long_readme = good + "\n" * MAX_LINES
    assert any("more than" in p for p in readme_problems(long_readme, verbs))
    late = "\n" * FIRST_SCREEN + good
    assert sum(f"first {FIRST_SCREEN} lines" in p for p in readme_problems(late, verbs)) == 2
    assert any("dated" in p for p in readme_problems(good + "\nmeasured 2026-12-07\n", verbs))
    # The index: a file under docs/ that nothing links is found.
    (tmp_path / "docs" / "runs").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A\n")
    (tmp_path / "docs" / "runs" / "b.csv").write_text("x\n")
    (tmp_path / "docs" / "runs" / "README.md").write_text("[b](b.csv)\n")
    (tmp_path / "docs" / "README.md").write_text("[a](a.md), [runs](runs/README.md)\n")
    assert index_problems(tmp_path / "docs" / "README.md", tmp_path / "docs") == []
    (tmp_path / "docs" / "runs" / "c.png").write_text("x\n")
    problems = index_problems(tmp_path / "docs" / "README.md", tmp_path / "docs")
    assert problems == ["not linked from README.md: runs/c.png"]
