"""The docs are self-contained: code, configs and docs cite `docs/design.md` / `docs/paper.md`,
never the design notes and paper transcript that live outside the repository (`../shared`).

The one legitimate outside path is the optional real tokenizer folder `../shared/qwen3-tokenizer`
(tests/conftest.py, README.md), which is data, not documentation.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCOPE = ("kdlite", "conf", "docs", "tests", "train.py", "evaluate.py", "README.md")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".json"}
THIS = Path(__file__).resolve()

# `DESIGN §3`, `DESIGN.md`, `PAPER.md`, `shared/PAPER.md`, `../shared/...` (tokenizer folder excepted).
OUTSIDE = re.compile(
    r"\bDESIGN(?:\.md|\s*§)|\bPAPER(?:\.md|\s*§)|(?<![\w-])shared/(?!qwen3-tokenizer)"
)
DESIGN_CITE = re.compile(r"docs/design\.md\s+§\s*(\d+[a-z]?)")
DESIGN_HEADING = re.compile(r"^## §(\w+)\b", re.MULTILINE)
PAPER_CITE = re.compile(
    r"docs/paper\.md,?\s+(Setup|Tables? \d+(?:[–-]\d+)?|Figure \d+|Appendix A\.2)"
)
PAPER_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
# The shared design notes' numbering, which citations written before the move still use.
DESIGN_SECTIONS = {"1", "2", "3", "4", "4b", "5", "6", "7", "8"}


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--", *SCOPE],
            cwd=REPO,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        paths = [REPO / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        paths = []
        for name in SCOPE:
            root = REPO / name
            paths += [root] if root.is_file() else sorted(root.rglob("*"))
    return [p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES and p.resolve() != THIS]


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    files = _tracked_files()
    assert files, "no files found to check"
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in files}


def _hits(texts: dict[str, str], pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    return [
        (name, text.count("\n", 0, m.start()) + 1, m.group(0))
        for name, text in texts.items()
        for m in pattern.finditer(text)
    ]


def test_no_citation_points_outside_the_repository(texts):
    bad = _hits(texts, OUTSIDE)
    assert not bad, (
        "cite docs/design.md §n or docs/paper.md instead of documents outside the repository:\n"
        + "\n".join(f"{name}:{line}: {hit!r}" for name, line, hit in bad)
    )


def test_design_keeps_the_shared_numbering():
    headings = DESIGN_HEADING.findall((REPO / "docs" / "design.md").read_text(encoding="utf-8"))
    assert len(headings) == len(set(headings)), f"duplicate sections: {headings}"
    assert set(headings) == DESIGN_SECTIONS


def test_design_citations_name_existing_sections(texts):
    sections = set(DESIGN_HEADING.findall(texts["docs/design.md"]))
    cites = _hits(texts, DESIGN_CITE)
    assert cites, "expected the code to cite docs/design.md"
    bad = [
        (name, line, hit)
        for name, line, hit in cites
        if DESIGN_CITE.fullmatch(hit).group(1) not in sections  # type: ignore[union-attr]
    ]
    assert not bad, f"sections missing from docs/design.md ({sorted(sections)}): {bad}"


def test_paper_citations_name_existing_sections(texts):
    headings = PAPER_HEADING.findall(texts["docs/paper.md"])
    bad = [
        (name, line, hit)
        for name, line, hit in _hits(texts, PAPER_CITE)
        if not any(
            PAPER_CITE.fullmatch(hit).group(1) in h  # type: ignore[union-attr]
            for h in headings
        )
    ]
    assert not bad, f"no such heading in docs/paper.md ({headings}): {bad}"
