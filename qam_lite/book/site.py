"""The Jupyter Book 2 site, rendered from the chapters ``qam-lite book`` already executed.

Every chapter runs once: :func:`qam_lite.book.build.build` executes it (nbclient, batch mode) into
``_build/book/NN_*.ipynb``, and :func:`build_site` renders those notebooks with their stored outputs
(``jupyter book build --html``, no ``--execute``: mystmd shows a notebook's saved outputs when it
does not execute it). mystmd renders the project whose ``myst.yml`` is in its working folder, so
:func:`site_project` writes a copy of the book's project in ``_build/myst``: ``myst.yml`` with each
chapter's ``book/NN_*.md`` replaced by its executed ``book/NN_*.ipynb``, the rest of ``book/``
(``index.md``, ``images/``) and the library sources that chapters ``literalinclude``
(``../qam_lite/*.py``). Links between chapters (``01_flow_matching.md``) are pointed at the
notebooks. The site lands in ``_build/html``; :func:`check_site` then checks every chapter page.

The theme links its stylesheets from CDNs (KaTeX's, without which every formula shows twice: once
typeset, once as the MathML KaTeX writes for screen readers; font-awesome's), and matplotlib's
``to_jshtml`` players link font-awesome 4.4 for their buttons. :func:`vendor_stylesheets` ships
copies of those files (``qam_lite/book/vendor``, from their npm packages) with the built site and
points the pages at them, so the site reads the same offline (``python -m http.server -d
_build/html``) as online.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

from qam_lite.book import chapters
from qam_lite.book.build import Interrupted

#: Where mystmd looks for a site template before downloading one, inside a project folder.
THEME_DIR = Path("_build") / "templates" / "site" / "myst" / "book-theme"
#: The generated MyST project, inside the build folder (``_build``).
PROJECT_DIR = "myst"


#: The stylesheets shipped with the site (``vendor/README.md`` says where each file comes from).
VENDOR_DIR = Path(__file__).resolve().with_name("vendor")
#: Where they land in the built site, below its base URL.
VENDORED_AT = "vendor"
_FONT_AWESOME = "font-awesome/css/font-awesome.min.css"
#: CDN stylesheet -> the vendored copy (``VENDOR_DIR``-relative). font-awesome 4.7 holds every
#: icon of 4.4 under the same names.
VENDORED = {
    "https://cdn.jsdelivr.net/npm/katex@0.15.2/dist/katex.min.css": "katex/katex.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/4.7.0/css/font-awesome.css": _FONT_AWESOME,
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/4.7.0/css/font-awesome.min.css": (
        _FONT_AWESOME
    ),
    "https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/css/font-awesome.min.css": _FONT_AWESOME,
}
# The theme also links ipympl's widget stylesheet at jupyter-matplotlib@0.11.3, a version npm
# never had (the link fails online too); the book has no ipympl widget, so the link is dropped.
_DEAD_LINKS = [
    re.compile(r'<link[^>]*href="https://cdn\.jsdelivr\.net/npm/jupyter-matplotlib@[^"]*"[^>]*>'),
    re.compile(
        r'\{rel:"stylesheet",href:"https://cdn\.jsdelivr\.net/npm/jupyter-matplotlib@[^"]*"\},?'
    ),
]
#: A stylesheet on another host, as pages (HTML, page JSON) and the theme's JavaScript (which
#: re-adds its ``<link>`` elements when a page hydrates) name it.
_OUTSIDE_CSS = re.compile(r"""(?:https?:)?//[\w.-]+\.[a-z]+/[^"'\s\\<>()]*\.css\b""")
_TEXT_SUFFIXES = {".html", ".json", ".js"}


class SiteError(Exception):
    """The site could not be built, or was built without the outputs it should hold."""


def install_theme(theme: Path, root: Path = chapters.ROOT) -> Path:
    """Copy a local ``book-theme`` site template where mystmd looks before downloading one.

    mystmd installs ``node_modules`` inside the template folder (``npm install``), so the
    template is copied (without its ``node_modules``) rather than used in place. Returns the copy.
    """
    theme = Path(theme).expanduser().resolve()
    if not (theme / "template.yml").is_file():
        raise SiteError(f"--theme {theme} is not a MyST site template (no template.yml in it)")
    dest = root / THEME_DIR
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        theme, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules", ".git")
    )
    # The source may be read-only (CI's shared/); npm must write node_modules into the copy.
    for folder, subfolders, files in os.walk(dest):
        subfolders[:] = [name for name in subfolders if name != "node_modules"]
        for path in [folder, *(os.path.join(folder, name) for name in files)]:
            os.chmod(path, os.stat(path).st_mode | 0o200)
    return dest


def site_command() -> list[str]:
    """The site build command, with this Python's ``jupyter`` even when the venv is inactive.

    No ``--execute``: the chapters were executed by :func:`qam_lite.book.build.build`.
    """
    import sys

    beside = Path(sys.executable).with_name("jupyter")
    jupyter = str(beside) if beside.exists() else shutil.which("jupyter") or "jupyter"
    return [jupyter, "book", "build", "--html", "--ci"]


def stale_chapters(executed: Path, quick_mode: bool) -> list[str]:
    """Chapters with no finished run in ``executed`` for their current source, library and mode."""
    state = chapters.read_state(executed)
    library = chapters.library_hash()
    return [
        md.stem
        for md in chapters.chapters()
        if not chapters.is_finished(md, executed, state, quick_mode, library)
    ]


def _link_rewriter(stems: set[str]):
    """``text -> text`` pointing links to chapter sources (``NN_name.md``) at their notebooks."""
    if not stems:
        return lambda text: text
    pattern = re.compile(
        r"(?<![\w.-])(" + "|".join(map(re.escape, sorted(stems))) + r")\.md(?=[)#\s>\"']|$)"
    )
    return lambda text: pattern.sub(r"\1.ipynb", text)


def _toc(entries: list, chapter_files: dict[str, str | None], left_out: list[str]) -> list:
    """``entries`` with chapter files replaced (``chapter_files``: source -> notebook or None)."""
    kept = []
    for entry in entries:
        entry = dict(entry)
        source = entry.get("file")
        if source in chapter_files:
            if chapter_files[source] is None:
                left_out.append(source)
                continue
            entry["file"] = chapter_files[source]
        if isinstance(entry.get("children"), list):
            entry["children"] = _toc(entry["children"], chapter_files, left_out)
        kept.append(entry)
    return kept


def site_project(executed: Path, dest: Path, root: Path = chapters.ROOT) -> list[str]:
    """Write into ``dest`` the MyST project that renders the executed chapters of ``executed``.

    Copies ``root/myst.yml`` with every chapter's ``book/NN_*.md`` replaced by the executed
    ``book/NN_*.ipynb`` (chapters not executed are left out of the table of contents), the rest of
    ``root/book`` (chapter links pointed at the notebooks) and ``root/qam_lite`` (for
    ``literalinclude``), and links the project's other top-level folders and files (``results/``,
    ...) into ``dest``, so that ``../`` paths in pages resolve as in the book. Everything else in
    ``dest`` is removed, except ``dest/_build`` (mystmd's output, the theme and its
    ``node_modules``), of which ``html`` and ``site`` are emptied. Returns the chapters left out
    (not executed).
    """
    import nbformat
    import yaml

    executed, dest, root = Path(executed), Path(dest), Path(root)
    sources = chapters.chapters()
    done = {md.stem for md in sources if (executed / f"{md.stem}.ipynb").is_file()}
    rewrite = _link_rewriter({md.stem for md in sources})

    dest.mkdir(parents=True, exist_ok=True)
    for path in [*dest.iterdir(), dest / "_build" / "html", dest / "_build" / "site"]:
        if path.name == "_build" and path.parent == dest:
            continue
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)

    config = yaml.safe_load((root / "myst.yml").read_text())
    project = config.setdefault("project", {})
    chapter_files = {
        f"book/{md.name}": (f"book/{md.stem}.ipynb" if md.stem in done else None) for md in sources
    }
    left_out: list[str] = []
    project["toc"] = _toc(project.get("toc", []), chapter_files, left_out)
    # The executed notebooks are the pages now; the paired (unexecuted) ones are not copied.
    project["exclude"] = [p for p in project.get("exclude", []) if not p.endswith("*.ipynb")]
    (dest / "myst.yml").write_text(
        f"# Generated by qam_lite.book.site from {root / 'myst.yml'}: the executed chapters.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
    )

    chapter_names = {md.name for md in sources} | {f"{md.stem}.ipynb" for md in sources}
    shutil.copytree(
        root / "book",
        dest / "book",
        ignore=lambda _, names: [n for n in names if n in chapter_names or n.startswith(".")],
    )
    for md_file in (dest / "book").rglob("*.md"):
        md_file.write_text(rewrite(md_file.read_text()))
    for stem in sorted(done):
        nb = nbformat.read(executed / f"{stem}.ipynb", 4)
        nb.metadata.pop("jupytext", None)  # jupytext's pairing keys are not page front matter
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = rewrite(cell.source)
        nbformat.write(nb, dest / "book" / f"{stem}.ipynb")
    shutil.copytree(
        root / "qam_lite",
        dest / "qam_lite",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "vendor"),
    )
    # Anything else a page may point at with ../ (committed results/, benchmarks/, ...), in place.
    for path in root.iterdir():
        if not (
            path.name.startswith(".") or path.name in _NOT_LINKED or (dest / path.name).exists()
        ):
            (dest / path.name).symlink_to(path.resolve(), target_is_directory=path.is_dir())
    return sorted(Path(f).stem for f in left_out)


#: Top-level entries of the project not linked into the generated one: its own build folder and
#: data, environments, run folders (large, and never referenced by a page).
_NOT_LINKED = {"_build", "data", "runs", "venv", "node_modules", "qam_lite.egg-info"}


def build_site(
    executed: Path | None = None,
    *,
    quick_mode: bool = False,
    theme: Path | None = None,
    root: Path = chapters.ROOT,
    build_dir: Path | None = None,
    force: bool = False,
    timeout: int = 1800,
    strict: bool = True,
) -> Path:
    """Render the executed chapters in ``executed`` as the Jupyter Book 2 site; return index.html.

    ``executed``: the folder :func:`qam_lite.book.build.build` wrote (default ``_build/book``, as
    ``qam-lite book``'s ``--out``). Nothing is executed again. The project is generated in
    ``build_dir/myst`` (:func:`site_project`; ``build_dir`` defaults to ``root/_build``) and the
    site is ``build_dir/html``. ``theme``: a local copy of the ``book-theme`` template (offline
    builds; see :func:`install_theme`); without it mystmd downloads the theme. ``force`` is
    accepted for the command line's sake: a site build never reuses outputs of its own.

    With ``strict`` (the default), every chapter must have a finished run in ``executed`` for its
    current source, the current library and this mode (:class:`SiteError` names those that do not),
    and the built site must pass :func:`check_site`. Without it, the site is built from whatever
    chapters are executed, unchecked (the tests check it page by page).

    Raises :class:`SiteError` saying why when the build fails or a chapter page lacks outputs or
    holds a traceback, a live widget or a progress bar, and :class:`qam_lite.Interrupted`
    on Ctrl-C.
    """
    import subprocess
    import sys

    del force
    root = Path(root)
    executed = Path(executed) if executed is not None else Path("_build") / "book"
    build_dir = Path(build_dir) if build_dir is not None else root / "_build"
    if strict:
        stale = stale_chapters(executed, quick_mode)
        if stale:
            mode = "quick" if quick_mode else "full"
            again = "qam-lite book" + (" --quick" if quick_mode else "")
            raise SiteError(
                f"chapter(s) not executed in {mode} mode with the current sources in "
                f"{executed}: {', '.join(stale)} (run `{again}` first)"
            )
    project = build_dir / PROJECT_DIR
    site_project(executed, project, root)
    if theme is not None:
        install_theme(theme, project)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = build_dir / "site-build.log"
    command = site_command()
    print(
        f"book: building the site from the executed chapters in {executed} "
        f"(jupyter book build --html; log: {log})",
        flush=True,
    )
    try:
        with open(log, "w") as out:
            proc = subprocess.run(
                command,
                cwd=project,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted while building the site; the executed chapters are kept"
        ) from None
    except subprocess.TimeoutExpired as err:
        raise SiteError(f"the site build took over {timeout} s (log: {log})") from err
    except OSError as err:
        raise SiteError(f"cannot run {command[0]}: {err}") from err
    lines = log.read_text(errors="replace").splitlines()
    built = project / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        why = next(
            (ln for ln in lines if re.search(r"fail|error|⛔", ln, re.I)),
            lines[-1] if lines else "(no output)",
        )
        raise SiteError(f"jupyter book build failed: {why.strip()} (log: {log})")
    html_dir = build_dir / "html"
    if html_dir.exists():
        shutil.rmtree(html_dir)
    shutil.copytree(built, html_dir)
    vendor_stylesheets(html_dir)
    if strict:
        problems = check_site(html_dir)
        if problems:
            first = next((ln.strip() for ln in lines if "⛔" in ln), None)
            raise SiteError(
                f"the site was built but is not right (log: {log}):\n"
                + "\n".join(f"  {p}" for p in problems)
                + (f"\nfirst error in the log: {first}" if first else "")
            )
    return html_dir / "index.html"


def _base_url(html_dir: Path) -> str:
    """The path the site is served under (the build's ``BASE_URL``: ``""`` or ``"/repository"``),
    as ``index.html`` names the theme's own scripts."""
    index = html_dir / "index.html"
    text = index.read_text(errors="replace") if index.is_file() else ""
    found = re.search(r'(?:href|src)="([^"]*?)/build/', text)
    return found[1] if found else ""


def _site_texts(html_dir: Path):
    """``(path, text)`` of every page, page JSON and script of a built site, outside ``vendor/``.

    Decoded with ``surrogateescape``: a file written back is byte for byte the same where
    nothing was replaced."""
    for path in sorted(html_dir.rglob("*")):
        if path.suffix in _TEXT_SUFFIXES and path.is_file():
            if path.relative_to(html_dir).parts[0] != VENDORED_AT:
                yield path, path.read_bytes().decode("utf-8", "surrogateescape")


def vendor_stylesheets(html_dir: Path) -> list[Path]:
    """Ship the CDN stylesheets with a built site: copy :data:`VENDOR_DIR` to
    ``html_dir/vendor`` and point every page, page JSON and script at the copies (dropping the
    theme's dead ipympl link). Returns the files changed.

    KaTeX's ``<link>`` keeps its ``integrity`` hash: the copy is the npm package's file, byte for
    byte the one the CDN serves (``vendor/README.md``).
    """
    html_dir = Path(html_dir)
    base = _base_url(html_dir)
    dest = html_dir / VENDORED_AT
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(VENDOR_DIR, dest)
    local = {url: f"{base}/{VENDORED_AT}/{path}" for url, path in VENDORED.items()}
    cdn = re.compile("|".join(map(re.escape, sorted(local, key=len, reverse=True))))
    changed = []
    for path, text in _site_texts(html_dir):
        new = cdn.sub(lambda m: local[m[0]], text)
        for dead in _DEAD_LINKS:
            new = dead.sub("", new)
        if new != text:
            path.write_bytes(new.encode("utf-8", "surrogateescape"))
            changed.append(path)
    return changed


def outside_stylesheets(html_dir: Path) -> list[str]:
    """``"file: url"`` for each stylesheet a built site still loads from another host."""
    html_dir = Path(html_dir)
    return [
        f"{path.relative_to(html_dir).as_posix()}: {url}"
        for path, text in _site_texts(html_dir)
        for url in sorted(set(_OUTSIDE_CSS.findall(text)))
    ]


def _walk_outputs(node):
    """Every ``output`` node of a mystmd page tree."""
    if isinstance(node, dict):
        if node.get("type") == "output" and "jupyter_data" in node:
            yield node["jupyter_data"]
        for value in node.values():
            yield from _walk_outputs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_outputs(value)


def _has_code(node) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "code" and node.get("executable"):
            return True
        return any(_has_code(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_code(v) for v in node)
    return False


def chapter_pages(html_dir: Path) -> dict[str, dict]:
    """``{chapter stem: page JSON}`` of a built site (pages from ``book/NN_*.md`` or ``.ipynb``)."""
    pages = {}
    for page in Path(html_dir).glob("*.json"):
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            data = json.loads(page.read_text())
            if isinstance(data, dict) and "location" in data and "mdast" in data:
                pages[Path(data["location"]).stem] = data
    return pages


def check_site(html_dir: Path) -> list[str]:
    """Problems with a built site's chapter pages (empty when every page is right).

    Each chapter page (``book/NN_*.md``, rendered from its executed notebook) must exist, hold
    outputs, and hold no error output, traceback, live widget or progress bar; every figure it
    references must exist on disk. No page or script may load a stylesheet from another host
    (offline, KaTeX's missing stylesheet shows every formula twice; :func:`vendor_stylesheets`).
    """
    html_dir = Path(html_dir)
    pages = chapter_pages(html_dir)
    problems = [
        f"stylesheet from outside the site (not vendored): {where}"
        for where in outside_stylesheets(html_dir)
    ]
    for md in chapters.chapters():
        where = md.relative_to(md.parent.parent).as_posix()
        page = pages.get(md.stem)
        if page is None:
            problems.append(f"{where}: no page in {html_dir}")
            continue
        outputs = list(_walk_outputs(page["mdast"]))
        if _has_code(page["mdast"]) and not outputs:
            problems.append(f"{where}: no outputs (the chapter was not executed)")
        elif _has_code(page["mdast"]) and not any(
            key.startswith("image/") for o in outputs for key in o.get("data", {})
        ):
            problems.append(f"{where}: no figure (was MPLBACKEND set to a non-inline backend?)")
        for output in outputs:
            problems += [f"{where}: {p}" for p in chapters.output_problems(output)]
            for bundle in output.get("data", {}).values():
                path = bundle.get("path") if isinstance(bundle, dict) else None
                if path and not (html_dir / path.lstrip("/")).exists():
                    problems.append(f"{where}: output file {path} missing")
    return problems
