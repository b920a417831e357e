"""The book's API reference page, ``book/api.md``, generated from the library's sources.

:func:`api_markdown` reads every public module of :mod:`qam_lite` with :mod:`ast` (nothing is
imported, so JAX never loads): its docstring, and its public top-level functions, classes and
constants (``__all__`` where the module has one, else the names without a leading ``_``), each
with its signature as written and its docstring's first paragraph. Modules are grouped by layer,
and every name a chapter uses says which chapter teaches it (the first that uses it) and which
others use it. ``qam-lite book --sync`` rewrites the page; a test keeps it in step.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from qam_lite.book.chapters import BOOK_DIR, ROOT, chapters

#: The page, relative to the project root.
API_PAGE = BOOK_DIR / "api.md"


PACKAGE = ROOT / "qam_lite"


#: ``(layer title, package, what it holds, modules in reading order)``; a module missing from the
#: order (a new file) is listed after them, sorted.
LAYERS = [
    (
        "Top level",
        "qam_lite",
        "the maths and all that chapters 1-7 import: flows, SDEs, the lean adjoint, networks, "
        "the agents, the toy problems, widgets and plots",
        [
            "qam_lite",
            "qam_lite.flows",
            "qam_lite.sde",
            "qam_lite.adjoint",
            "qam_lite.networks",
            "qam_lite.chunks",
            "qam_lite.config",
            "qam_lite.agents",
            "qam_lite.agents.qam",
            "qam_lite.agents.fql",
            "qam_lite.agents.bam",
            "qam_lite.agents.bc",
            "qam_lite.agents.qam_e",
            "qam_lite.agents.qam_f",
            "qam_lite.agents.common",
            "qam_lite.toys",
            "qam_lite.toytrain",
            "qam_lite.toycritics",
            "qam_lite.widgets",
            "qam_lite.plotting",
            "qam_lite.atomic",
            "qam_lite.modes",
        ],
    ),
    (
        "Data",
        "qam_lite.data",
        "OGBench tasks and datasets, local generation, the replay buffer",
        [
            "qam_lite.data",
            "qam_lite.data.tasks",
            "qam_lite.data.datasets",
            "qam_lite.data.generate",
            "qam_lite.data.replay",
        ],
    ),
    (
        "Training",
        "qam_lite.training",
        "from a config to a run folder: settings, compiled updates, the loops, checkpoints, "
        "logs, evaluation",
        [
            "qam_lite.training",
            "qam_lite.training.settings",
            "qam_lite.training.update",
            "qam_lite.training.train",
            "qam_lite.training.rundir",
            "qam_lite.training.checkpoint",
            "qam_lite.training.logs",
            "qam_lite.training.envpool",
            "qam_lite.training.evaluate",
        ],
    ),
    (
        "Experiments",
        "qam_lite.experiments",
        "sweeps, the paper's numbers, statistics, tables, rendered episodes, probes",
        [
            "qam_lite.experiments",
            "qam_lite.experiments.plan",
            "qam_lite.experiments.sweep",
            "qam_lite.experiments.stats",
            "qam_lite.experiments.paper",
            "qam_lite.experiments.ours",
            "qam_lite.experiments.formats",
            "qam_lite.experiments.table",
            "qam_lite.experiments.render",
            "qam_lite.experiments.probe",
            "qam_lite.experiments.gradstats",
        ],
    ),
    (
        "Book tooling",
        "qam_lite.book",
        "the chapters as files, `--sync`, executing the chapters, the site, this page",
        [
            "qam_lite.book",
            "qam_lite.book.chapters",
            "qam_lite.book.sync",
            "qam_lite.book.build",
            "qam_lite.book.site",
            "qam_lite.book.api",
        ],
    ),
    ("Command line", "qam_lite.cli", "the `qam-lite` command", ["qam_lite.cli"]),
]


_INTRO = """\
# API reference

Every public module of the `qam_lite` library, layer by layer: its docstring's summary, then
each public function, class and constant with its signature as written in the source and the
first paragraph of its docstring. A name that a chapter uses links to the chapter that teaches
it (the first to use it) and lists the others that use it. This page is generated from the
sources by `qam-lite book --sync` (`qam_lite.book.api`); do not edit it by hand.

Layers, each importing only those below it (and its own):

- **Command line** (`qam_lite.cli`): above everything.
- **Book tooling** (`qam_lite.book`) and **Experiments** (`qam_lite.experiments`), beside each
  other (they never import each other) → **Training** (`qam_lite.training`) → **Data**
  (`qam_lite.data`) → **Top level** (`qam_lite.*`, the maths).
"""


def module_name(path: Path) -> str:
    """``qam_lite.data.tasks`` for ``qam_lite/data/tasks.py``, ``qam_lite.data`` for its
    ``__init__.py``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def public_modules() -> dict[str, Path]:
    """``{module name: path}`` of every public module: packages, and ``.py`` files whose name
    does not start with ``_``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts or (
            path.name.startswith("_") and path.name != "__init__.py"
        ):
            continue
        found[module_name(path)] = path
    return found


def _layer(module: str) -> int:
    """Index in :data:`LAYERS` of the layer holding ``module``."""
    for i, (_, package, _, _) in enumerate(LAYERS):
        if i and (module == package or module.startswith(package + ".")):
            return i
    return 0


def _first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line, Sphinx roles turned into code spans."""
    if not doc:
        return ""
    paragraph = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines())
    if paragraph.endswith("::"):
        paragraph = paragraph[:-1]
    return _ROLE.sub(
        lambda m: f"`{m['target'].rpartition('.')[2] if m['tilde'] else m['target']}`", paragraph
    )


_ROLE = re.compile(
    r":(?:func|class|data|mod|meth|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`"
)


def _signature(node: ast.AST) -> str:
    """``name(args) -> returns`` as written, ``class Name(bases)`` or ``NAME = value``."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        prefix = "async " if isinstance(node, ast.AsyncFunctionDef) else ""
        return f"{prefix}{node.name}({_arguments(node.args)}){returns}"
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in [*node.bases, *node.keywords])
        return f"class {node.name}" + (f"({bases})" if bases else "")
    target, value = _assigned(node)
    annotation = f": {ast.unparse(node.annotation)}" if isinstance(node, ast.AnnAssign) else ""
    shown = ast.unparse(value) if value is not None else ""
    if not shown or len(shown) > 60 or "\n" in shown:
        return f"{target}{annotation}"
    return f"{target}{annotation} = {shown}"


def _arguments(args: ast.arguments) -> str:
    """A parameter list as the source writes it (PEP 8: ``x: int = 0``, but ``x=0``)."""

    def one(arg: ast.arg, default: ast.expr | None, star: str = "") -> str:
        text = star + arg.arg + (f": {ast.unparse(arg.annotation)}" if arg.annotation else "")
        if default is not None:
            text += (" = " if arg.annotation else "=") + ast.unparse(default)
        return text

    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parts = [one(a, d) for a, d in zip(positional, defaults, strict=True)]
    if args.posonlyargs:
        parts.insert(len(args.posonlyargs), "/")
    if args.vararg:
        parts.append(one(args.vararg, None, "*"))
    elif args.kwonlyargs:
        parts.append("*")
    parts += [one(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg:
        parts.append(one(args.kwarg, None, "**"))
    return ", ".join(parts)


def _assigned(node: ast.AST) -> tuple[str | None, ast.expr | None]:
    """``(name, value)`` of a top-level ``NAME = value`` or ``NAME: T = value``, else ``None``."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        if isinstance(node.targets[0], ast.Name):
            return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _comment_doc(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment lines just above line ``lineno`` (1-based), as one line."""
    found = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return _first_paragraph("\n".join(found))


class _Module:
    """One module read with :mod:`ast`: its docstring, its public names in source order, and
    where the names it imports come from."""

    def __init__(self, name: str, path: Path):
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        self.name, self.path = name, path
        self.doc = _first_paragraph(ast.get_docstring(tree))
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, name there)
        explicit = None
        defined: list[tuple[str, str, str]] = []  # (name, signature, summary)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.append(
                    (node.name, _signature(node), _first_paragraph(ast.get_docstring(node)))
                )
            else:
                target, value = _assigned(node)
                if target == "__all__" and isinstance(value, ast.List | ast.Tuple):
                    explicit = [ast.literal_eval(e) for e in value.elts]
                elif target and target.isidentifier():
                    doc = _comment_doc(lines, node.lineno)
                    defined.append((target, _signature(node), doc))
        latest = {name: (name, signature, summary) for name, signature, summary in defined}
        if explicit is None:
            self.entries = [e for n, e in latest.items() if not n.startswith("_")]
            self.reexports: list[str] = []
        else:
            self.entries = [e for n, e in latest.items() if n in explicit]
            self.reexports = [n for n in explicit if n not in latest]
        self.names = {e[0] for e in self.entries}


def _read_modules() -> dict[str, _Module]:
    return {name: _Module(name, path) for name, path in public_modules().items()}


def _resolve(modules: dict[str, _Module], module: str, name: str) -> tuple[str, str] | None:
    """``(module, name)`` where ``module.name`` is defined, following re-exports."""
    for _ in range(10):
        mod = modules.get(module)
        if mod is None:
            return None
        if name in mod.names:
            return module, name
        if name not in mod.imports:
            return None
        module, name = mod.imports[name]
    return None


_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(?P<body>.*?)^```", re.M | re.S)


_INCLUDE = re.compile(r"```\{literalinclude\} (?P<path>\S+)\n(?P<opts>(?::[^\n]*\n)*)")


_START = re.compile(r"^:start-at: (?:async def|def|class) (?P<name>\w+)\b", re.M)


def _cell_code(body: str) -> str:
    """A code cell's Python: its ``:option:`` / ``---`` front matter and magics dropped."""
    lines = body.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---"), 0)
        lines = lines[end + 1 :]
    while lines and lines[0].startswith(":"):
        lines = lines[1:]
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)


def chapter_uses(text: str, modules: dict[str, _Module]) -> set[tuple[str, str]]:
    """``(module, name)`` of every public name a chapter's source uses: the objects its
    ``literalinclude`` blocks show, the names its code imports from a module, and the
    ``module.name`` references its code makes through an imported module."""
    uses = set()
    for match in _INCLUDE.finditer(text):
        path = (BOOK_DIR / match["path"]).resolve()
        start = _START.search(match["opts"])
        if start and path.suffix == ".py" and path.is_relative_to(ROOT):
            found = _resolve(modules, module_name(path), start["name"])
            uses |= {found} if found else set()
    aliases: dict[str, str] = {}  # local name -> module
    trees = []
    for cell in _CODE_CELL.finditer(text):
        try:
            trees.append(ast.parse(_cell_code(cell["body"])))
        except SyntaxError:
            continue
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules and alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module in modules:
                for alias in node.names:
                    local = alias.asname or alias.name
                    if f"{node.module}.{alias.name}" in modules:
                        aliases[local] = f"{node.module}.{alias.name}"
                    elif found := _resolve(modules, node.module, alias.name):
                        uses.add(found)
    for tree in trees:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                found = _resolve(modules, aliases[node.value.id], node.attr)
                uses |= {found} if found else set()
    return uses


def _chapter_number(md: Path) -> int:
    return int(md.name[:2])


def _link(md: Path, text: str) -> str:
    return f"[{text}]({md.name})"


def _taught(chapter_list: list[Path]) -> str:
    """``taught in [chapter 3](03_x.md); used in [5](05_y.md), [6](06_z.md)``."""
    first, *rest = chapter_list
    out = "taught in " + _link(first, f"chapter {_chapter_number(first)}")
    if rest:
        out += "; used in " + ", ".join(_link(md, str(_chapter_number(md))) for md in rest)
    return out


def _code(text: str) -> str:
    """``text`` as a Markdown code span, whatever backticks it holds."""
    ticks = max((len(t) for t in re.findall(r"`+", text)), default=0) + 1
    fence = "`" * ticks
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def api_markdown() -> str:
    """The page ``book/api.md``: every public module by layer, its names, and the chapters that
    teach and use them."""
    modules = _read_modules()
    used_in: dict[tuple[str, str], list[Path]] = {}
    for md in chapters():
        for use in sorted(chapter_uses(md.read_text(), modules)):
            used_in.setdefault(use, []).append(md)
    by_layer: list[list[str]] = [[] for _ in LAYERS]
    for name in modules:
        by_layer[_layer(name)].append(name)
    out = [_INTRO]
    for (title, package, holds, order), names in zip(LAYERS, by_layer, strict=True):
        ordered = [n for n in order if n in modules] + sorted(set(names) - set(order))
        if not ordered:
            continue
        out.append(f"## {title}: `{package}`\n\n{holds[0].upper()}{holds[1:]}.\n")
        for name in ordered:
            out.append(_module_section(modules[name], used_in))
    return "\n".join(out).rstrip("\n") + "\n"


def _module_section(mod: _Module, used_in: dict[tuple[str, str], list[Path]]) -> str:
    """One ``###`` section: the module's summary and a bullet per public name."""
    where = mod.path.relative_to(ROOT).as_posix()
    lines = [f"### `{mod.name}`", "", f"{mod.doc} ({_code(where)})" if mod.doc else _code(where)]
    if mod.entries:
        lines.append("")
    for name, signature, summary in mod.entries:
        entry = "- " + _code(signature)
        if summary:
            entry += f": {summary}" + ("" if summary.endswith((".", "!", "?", ":")) else ".")
        if (mod.name, name) in used_in:
            taught = _taught(used_in[(mod.name, name)])
            entry += f" *{taught[0].upper()}{taught[1:]}.*" if summary else f" — *{taught}*"
        lines.append(entry)
    if mod.reexports:
        lines += ["", "Re-exports " + ", ".join(_code(n) for n in mod.reexports) + "."]
    return "\n".join(lines) + "\n"
