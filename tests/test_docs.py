"""The manual: README.md and docs/*.md. Every relative link resolves to a file of the repository (and its
#anchor to a heading there), every docs page is linked from the README, the README stays short and keeps
the two set-up commands verbatim (CI runs the second), and web links are well-formed (not fetched)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 250
SETUP_COMMANDS = ["python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[spark]' && dfnet train",
                  "bash tests/setup.sh && python -m pytest -q"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
AUTOLINK = re.compile(r"<(https?://[^>]*)>")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
                      re.I)


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans, where Markdown makes links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    text = prose(page.read_text())
    return ([m.group(1) for m in INLINE_LINK.finditer(text)] + [m.group(1) for m in REFERENCE_LINK.finditer(text)]
            + [m.group(1) for m in AUTOLINK.finditer(text)])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup and punctuation (but hyphens) dropped, lower
    case, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, numbered -1, -2, ... when a slug repeats, as GitHub does."""
    seen: dict[str, int] = {}
    result = set()
    for match in re.finditer(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", page.read_text()), re.M):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(page: Path) -> list[str]:
    """What is wrong with each link of `page`, one message per bad link."""
    problems = []
    for target in links(page):
        parts = urlsplit(target)
        if parts.scheme in ("http", "https"):
            if not (parts.hostname and HOSTNAME.match(parts.hostname)) or re.search(r"\s", target):
                problems.append(f"{target}: not a well-formed web address")
            continue
        if parts.scheme or target.startswith("//"):
            problems.append(f"{target}: only relative links and http(s) addresses are allowed")
            continue
        path, anchor = unquote(parts.path), unquote(parts.fragment)
        if path.startswith("/"):
            problems.append(f"{target}: absolute path; use a path relative to {page.name}")
            continue
        resolved = (page.parent / path).resolve() if path else page
        if ROOT not in (resolved, *resolved.parents):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file {resolved.relative_to(ROOT)}")
        elif anchor:
            if resolved.suffix != ".md" or not resolved.is_file():
                problems.append(f"{target}: an anchor into something that is not a Markdown page")
            elif anchor not in anchors(resolved):
                problems.append(f"{target}: no heading of {resolved.relative_to(ROOT)} has the anchor #{anchor}")
    return problems


def test_there_are_docs_pages():
    assert DOCS, "docs/*.md is empty"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / unquote(urlsplit(t).path)).resolve() for t in links(README)
              if not urlsplit(t).scheme and urlsplit(t).path}
    assert [str(p.relative_to(ROOT)) for p in DOCS if p.resolve() not in linked] == []


def test_readme_is_short():
    assert len(README.read_text().splitlines()) < MAX_README_LINES


def test_readme_has_the_setup_commands_verbatim():
    """Each command is one whole line of a ```bash block, as a user copies it."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)
    lines = {line for block in blocks for line in block.splitlines()}
    assert [c for c in SETUP_COMMANDS if c not in lines] == []
    ci = ROOT / ".ci" / "run"
    if ci.exists():  # CI runs README's test command verbatim
        assert SETUP_COMMANDS[1] in ci.read_text().splitlines()


# --- the checker itself: it must catch what it is for -------------------------------------------

def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Write modes: `error`, overwrite\n")
    page = tmp_path / "README.md"
    page.write_text("\n".join([
        "[ok](docs/a.md) [ok](docs/a.md#a-page) [ok](docs/a.md#write-modes-error-overwrite) [ok](#top)",
        "# Top", "[ok](https://spark.apache.org/docs/latest/) `[not a link](nowhere.md)`",
        "```", "[not a link](nowhere.md)", "```",
        "[missing](docs/b.md) [bad anchor](docs/a.md#nope) [bad web](https://exa_mple..com/x)",
        "[bad web](http://) [scheme](ftp://example.com/f) [outside](../elsewhere.md)"]))
    assert [p.split(":")[0] for p in broken_links(page)] == [
        "docs/b.md", "docs/a.md#nope", "https", "http", "ftp", "../elsewhere.md"]
