"""The API reference page ``book/api.md``: generated from the sources, complete, in the site."""

from __future__ import annotations

import re

import pytest

from qam_lite.book import api, chapters

ROOT = chapters.ROOT


@pytest.fixture(scope="module")
def page() -> str:
    return api.api_markdown()


def _section(page: str, module: str) -> str:
    """The text of ``### `module``` up to the next heading."""
    match = re.search(rf"^### `{re.escape(module)}`\n(.*?)(?=^#)", page + "\n#", re.M | re.S)
    assert match, f"no section for {module} on the API page"
    return match[1]


def _entry(page: str, module: str, name: str) -> str:
    """The bullet of ``name`` in ``module``'s section."""
    section = _section(page, module)
    found = re.findall(rf"^- `(?:class )?{re.escape(name)}\b[^\n]*", section, re.M)
    assert len(found) == 1, f"{module}.{name}: {len(found)} entries on the API page"
    return found[0]


def test_the_committed_page_is_the_generated_one(page):
    committed = (ROOT / "book" / "api.md").read_text()
    assert committed == page, "book/api.md is out of date: run `qam-lite book --sync`"


def test_every_public_module_has_a_section(page):
    package = ROOT / "qam_lite"
    modules = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py":
            modules.append(".".join(path.parent.relative_to(ROOT).parts))
        elif not path.name.startswith("_"):
            modules.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    assert len(modules) > 50 and "qam_lite.experiments.gradstats" in modules
    headings = re.findall(r"^### `([\w.]+)`$", page, re.M)
    assert sorted(headings) == sorted(modules)
    assert len(headings) == len(set(headings))
    assert not re.search(r"^- `(?:class )?_", page, re.M), "a private name is listed"


@pytest.mark.parametrize(
    ("module", "name", "chapter"),
    [
        ("qam_lite.flows", "euler_sample", "01_flow_matching"),  # flows.euler_sample(...)
        ("qam_lite.adjoint", "lean_adjoint", "05_lean_adjoint"),  # adjoint.lean_adjoint(...)
        ("qam_lite.agents.common", "critic_target", "07_critics"),  # only a literalinclude
        ("qam_lite.toycritics", "bandit_q", "07_critics"),  # through `toycritics as tc`
        ("qam_lite.modes", "pick", "01_flow_matching"),  # imported from qam_lite.book
        ("qam_lite.training.settings", "make_config", "07_critics"),  # imported by name
        ("qam_lite.cli", "main", "10_benchmark_table"),  # imported as qam_lite_cli
    ],
)
def test_names_say_which_chapter_teaches_them(page, module, name, chapter):
    entry = _entry(page, module, name)
    number = int(chapter[:2])
    assert re.search(rf"taught in \[chapter {number}\]\({chapter}\.md\)", entry, re.I), entry


def test_later_chapters_are_listed_and_unused_names_say_nothing(page):
    entry = _entry(page, "qam_lite.adjoint", "lean_adjoint")
    assert entry.endswith("used in [6](06_adjoint_matching.md).*"), entry
    assert "taught" not in _entry(page, "qam_lite.flows", "time_grid").lower()
    signature = "`flow_matching_loss(velocity: Velocity, x1: jax.Array, key: jax.Array, "
    assert _entry(page, "qam_lite.flows", "flow_matching_loss").startswith("- " + signature)


def test_the_toc_lists_the_page_and_it_is_no_chapter():
    import yaml

    toc = yaml.safe_load((ROOT / "myst.yml").read_text())["project"]["toc"]
    assert toc[-1] == {"file": "book/api.md"}
    assert ROOT / "book" / "api.md" not in chapters.chapters()


def test_the_site_project_keeps_the_page(tmp_path):
    import yaml

    from qam_lite.book import site

    (tmp_path / "executed").mkdir()  # no chapter executed: every chapter is left out
    project = tmp_path / "myst"
    site.site_project(tmp_path / "executed", project, ROOT)
    config = yaml.safe_load((project / "myst.yml").read_text())
    assert {"file": "book/api.md"} in config["project"]["toc"]
    copied = (project / "book" / "api.md").read_text()
    assert "](01_flow_matching.ipynb)" in copied and "](01_flow_matching.md)" not in copied


def test_sync_rewrites_a_stale_page(tmp_path, monkeypatch):
    from qam_lite.book import chapters, sync

    target = tmp_path / "api.md"
    target.write_text("# stale\n")
    monkeypatch.setattr(api, "API_PAGE", target)
    monkeypatch.setattr(chapters, "chapters", lambda: [])  # no chapter is rewritten or re-paired
    assert sync.sync() == [target]
    assert target.read_text() == api.api_markdown()
    assert sync.sync() == []
