"""The README and docs/ match the commands: every link leads to a page and a heading that
exist, every option they name is an option of segtool (of the very command it is given to,
where a command line or ``CMD --option`` shows which), the defaults docs/train.md's table
states are `TrainConfig`'s, and what the README says ``make demo`` runs is the Makefile's.

The options come from the commands themselves (the click commands `segtool --help` prints),
so a renamed or removed option fails here until the documentation follows.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from segtool.cli.app import COMMANDS, GLOBAL_FLAGS, load_command
from segtool.train.config import PLANNED, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
#: The pages a user reads: the README and docs/ (benchmarks.md names the scripts' own options).
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md"))]
USER_PAGES = [p for p in PAGES if p.name != "benchmarks.md"]
#: Options of other programs that the pages show beside segtool's.
FOREIGN = {
    "--nproc-per-node",  # torchrun
    "--nfc",  # convmv
    "--check",  # ruff format --check
    "--x",  # a placeholder, in the error message "--x 'v' is not one of ..."
    "--install-completion",  # typer's, on `segtool` itself
    "--show-completion",
}

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
INLINE = re.compile(r"`([^`]+)`")
DOC_REF = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
COMMAND_LINE = re.compile(r"(?:^|\s)segtool\s+([a-z][a-z-]*)\b(.*)$", re.S)


def command_options() -> dict[str, set[str]]:
    """Each command's long options (``--x`` and ``--no-x``), as its --help lists them."""
    options = {}
    for name in COMMANDS:
        params = load_command(name).params
        options[name] = {o for p in params for o in (*p.opts, *p.secondary_opts) if o[:2] == "--"}
    return options


OPTIONS = command_options()
ANY_OPTION = set().union(*OPTIONS.values(), GLOBAL_FLAGS, {"--help", "--version"}, FOREIGN)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept),
    each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors a page has: its headings' slugs (a repeated one numbered as GitHub does)
    and explicit ``<a id="...">`` targets."""
    text = FENCE.sub("", page.read_text())
    found: set[str] = set(re.findall(r'<a id="([^"]+)"', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The relative link targets of a page (web addresses left out)."""
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_leads_to_a_page_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists():
            broken.append(f"{target}: no file {goal.relative_to(ROOT)}")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {goal.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def command_mentions(text: str) -> list[tuple[str, str]]:
    """(command, the options after it) for each command line in a code block (continued lines
    joined, comments left out) and each inline code span that starts ``segtool CMD`` or
    ``CMD --``."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#\s.*$", "", line)
            if match := COMMAND_LINE.search(line):
                found.append((match[1], match[2]))
    for span in INLINE.findall(FENCE.sub("", text)):
        span = " ".join(span.split())
        if match := COMMAND_LINE.match(span) or re.match(r"([a-z][a-z-]*)( --.*)$", span):
            found.append((match[1], match[2]))
    return [(name, rest.strip()) for name, rest in found if name in COMMANDS]


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_every_option_named_is_one_of_segtool(page: Path) -> None:
    unknown = sorted(set(OPTION.findall(page.read_text())) - ANY_OPTION)
    assert not unknown, f"{page.name} names options no segtool command has: {unknown}"


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_options_given_to_a_command_are_that_commands(page: Path) -> None:
    wrong = []
    for name, rest in command_mentions(page.read_text()):
        extra = set(OPTION.findall(rest)) - OPTIONS[name] - set(GLOBAL_FLAGS) - {"--help"}
        wrong += [f"segtool {name} {option}" for option in sorted(extra)]
    assert not wrong, f"{page.name}: options the command does not have: {wrong}"


def test_command_mentions_are_found() -> None:
    """The reader of command lines sees what a page holds (else the test above checks nothing):
    a code block's lines, continued lines and comments, inline spans over two lines."""
    text = (
        "```bash\nsegtool train d/ --out r/ \\\n  --epochs 3   # not --this\n```\n"
        "`segtool predict RUN IMAGES OUT\n  --shard K/N` and `evaluate --model` and `--alone`"
    )
    assert command_mentions(text) == [
        ("train", "d/ --out r/    --epochs 3"),
        ("predict", "RUN IMAGES OUT --shard K/N"),
        ("evaluate", "--model"),
    ]
    assert "--resume" in OPTIONS["train"] and "--no-hd95" in OPTIONS["evaluate"]
    assert "--resume" not in OPTIONS["predict"]


def stated_defaults() -> list[tuple[str, str]]:
    """(option, default) for each row of docs/train.md's "Options and their defaults"."""
    text = (ROOT / "docs" / "train.md").read_text()
    section = text.split("### Options and their defaults", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `(--[a-z-]+)` \| `([^`]+)` \|", section, re.M)


def test_train_defaults_in_the_docs_are_train_configs() -> None:
    rows = stated_defaults()
    assert len(rows) >= 10, "docs/train.md lost its table of defaults"
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    wrong = []
    for option, shown in rows:
        name = option[2:].replace("-", "_")
        assert option in OPTIONS["train"], f"docs/train.md: segtool train has no {option}"
        assert name not in PLANNED, f"docs/train.md: {option} is planned, it has no one default"
        default = defaults[name]
        same = float(shown) == default if isinstance(default, int | float) else shown == default
        if not same:
            wrong.append(f"{option}: the docs say {shown}, TrainConfig has {default!r}")
    assert not wrong, "; ".join(wrong)


def test_the_readmes_demo_figures_are_the_makefiles() -> None:
    """What the README says `make demo` does is what the Makefile runs: its epochs, its
    options, the number of example images."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    demo = " ".join((ROOT / "Makefile").read_text().replace("\\\n", " ").split())
    epochs = re.search(r"--epochs (\d+)", demo)
    assert epochs and f"({epochs[1]} short epochs" in readme
    images = len(list((ROOT / "examples" / "annotations").glob("*.json")))
    assert readme.count(f"({images} labelme-annotated images") == 2  # Quick start, Development
    shown = re.search(r"runs the hand-tuned command instead \(`([^`]+)`\)", readme)
    assert shown, "the README no longer shows the demo's training options"
    pairs = re.findall(r"(--[a-z-]+) ([^\s-][^\s]*)", shown[1])
    assert pairs and all(f"{option} {value}" in demo for option, value in pairs), pairs


def test_segtools_texts_point_at_pages_that_exist() -> None:
    """Help texts and messages send the user to docs/ (the README keeps no reference), and
    every page and anchor segtool's code names exists."""
    named = []
    for module in sorted((ROOT / "segtool").rglob("*.py")):
        text = module.read_text()
        if module.parent.name == "cli":
            assert "README" not in text, f"{module.name}: point at the docs/ page instead"
        named += [(module.name, page, anchor) for page, anchor in DOC_REF.findall(text)]
    assert any(page == "train.md" for _, page, _ in named)  # --loss's help names its table
    for module, page, anchor in named:
        assert (ROOT / "docs" / page).is_file(), f"{module}: no docs/{page}"
        assert not anchor or anchor in anchors(ROOT / "docs" / page), f"{module}: no #{anchor}"
