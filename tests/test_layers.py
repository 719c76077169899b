"""The package's layers, read from its own imports: no import circles, none that runs back up.

The allowed directions are written once, in :data:`LAYERS`: a module may import its own layer
and the layers listed before it, never one after it. Imports under ``if TYPE_CHECKING:`` are
annotations, not dependencies, and are not counted; imports inside functions are.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aezip"

#: Lowest first. The root package (``aezip/__init__.py``, the public facade) and ``__main__`` sit on top.
LAYERS = (
    "aezip.errors",
    "aezip.archive.container",  # bytes: spec, reader, writer
    "aezip.entropy",  # integer latents ⇄ bytes
    "aezip.model",  # the network and its weights
    "aezip.codec",  # one image ⇄ bytes
    "aezip.archive",  # a folder tree ⇄ one archive
    "aezip.store",  # many archives: manifest, shards, object storage, executors
    "aezip.loader",  # feeding training from archives
    "aezip.train",  # training codecs
    "aezip.cli",  # the command line
    "aezip",  # the public facade and python -m aezip
)
#: Entries of ``aezip/`` that are not layers.
EXEMPT = {"__init__.py", "__main__.py", "errors.py", "__pycache__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, known: set[str]) -> set[str]:
    """The aezip modules that ``path`` imports at run time (``from pkg import module`` resolved)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "aezip")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aezip":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the most specific layer that holds ``module``."""
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS.index(best)


def graph() -> dict[str, set[str]]:
    """Module → the modules it imports. The root package is left out as a target: it is loaded
    before any of its modules anyway, and holds only the version, the errors and lazy names."""
    known = set(modules())
    return {name: imports(path, known) - {name, "aezip"} for name, path in modules().items()}


def test_no_import_runs_back_up() -> None:
    upward = [
        f"{name} ({LAYERS[layer_of(name)]}) imports {dep} ({LAYERS[layer_of(dep)]})"
        for name, deps in graph().items()
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    assert not circles, "import circles: " + "; ".join(" ↔ ".join(c) for c in circles)


def test_the_package_reads_as_its_layers() -> None:
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name not in EXEMPT)
    assert len(entries) <= 8, entries
    for entry in entries:
        folder = PACKAGE / entry
        assert folder.is_dir(), f"{entry}: a layer is a folder"
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"aezip/{entry}/__init__.py says what the layer holds"
    assert {name.split(".")[1] for name in LAYERS[1:-1]} == set(entries)
