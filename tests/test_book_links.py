"""The book's links resolve: every glossary term a page names exists, every glossary term is used
by some chapter, and every citation key is in ``book/references.bib``.

mystmd only warns on an unknown ``{term}`` or ``{cite}`` target (the site still builds, with a
broken link), so this reads the sources directly, without building anything.
"""

from __future__ import annotations

import functools
import re

import pytest

from qam_lite.book import chapters

BOOK = chapters.ROOT / "book"
PAGES = sorted(BOOK.glob("*.md"))

_ROLE = re.compile(r"\{(term|cite(?::[pt])?)\}`([^`]+)`")


@functools.cache
def glossary_terms() -> set[str]:
    """The glossary's entries, lower-cased (mystmd matches terms case-insensitively)."""
    text = (BOOK / "glossary.md").read_text()
    body = text.split(":::{glossary}", 1)[1].split(":::", 1)[0]
    return {
        line.strip().lower()
        for line in body.splitlines()
        if line and not line[0].isspace() and not line.startswith(":")
    }


def role_targets(text: str, role: str) -> list[str]:
    """Targets of ``{role}`...``` in ``text``: a term's ``label <target>`` form gives the target."""
    out = []
    for name, content in _ROLE.findall(text):
        if name.split(":")[0] != role:
            continue
        target = re.fullmatch(r".*<(.+)>", content.strip(), re.S)
        out.append((target.group(1) if target else content).strip())
    return out


@functools.cache
def bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,\s]+),", (BOOK / "references.bib").read_text(), re.M))


def test_the_readers_find_what_they_should():
    text = (
        "a {term}`flow matching` b {term}`memoryless schedule <Memoryless noise schedule>` "
        "{cite:p}`a2020x, b2021y` {cite:t}`c2022z`"
    )
    assert role_targets(text, "term") == ["flow matching", "Memoryless noise schedule"]
    assert role_targets(text, "cite") == ["a2020x, b2021y", "c2022z"]
    assert "valid mask" in glossary_terms() and "tilted distribution" in glossary_terms()
    assert "lipman2023flow" in bib_keys()


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_term_and_citation_resolves(page):
    text = page.read_text()
    unknown_terms = {t for t in role_targets(text, "term") if t.lower() not in glossary_terms()}
    assert not unknown_terms, f"{page.name}: not in book/glossary.md: {sorted(unknown_terms)}"
    keys = {k.strip() for group in role_targets(text, "cite") for k in group.split(",")}
    missing = keys - bib_keys()
    assert not missing, f"{page.name}: not in book/references.bib: {sorted(missing)}"


def test_every_glossary_term_is_linked_from_a_chapter():
    used = {t.lower() for md in chapters.chapters() for t in role_targets(md.read_text(), "term")}
    unlinked = glossary_terms() - used
    assert not unlinked, f"glossary terms no chapter links with {{term}}: {sorted(unlinked)}"


def test_every_chapter_links_the_glossary():
    bare = [md.name for md in chapters.chapters() if not role_targets(md.read_text(), "term")]
    assert not bare, f"chapters that link no glossary term: {bare}"
