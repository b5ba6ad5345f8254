"""The layering of docs/ARCHITECTURE.md, read from the source with ``ast``: no module imports a floor above its own,
and no modules import each other in a circle (lazy imports inside functions count too), so it cannot decay."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightnets"

# Lowest floor first; a module's floor is that of the longest prefix naming it. Keep in step with ARCHITECTURE.md.
FLOORS = [
    ("lightnets._io", "lightnets._plot", "lightnets._version", "lightnets.errors"),
    ("lightnets.layers", "lightnets.models", "lightnets.data", "lightnets.weights", "lightnets.train.loop",
     "lightnets.train.checkpoint", "lightnets.train.recipes"),
    ("lightnets.bench", "lightnets.deploy", "lightnets.export", "lightnets.report"),
    ("lightnets.train",),
    ("lightnets.detect", "lightnets.search", "lightnets.segment", "lightnets.pose", "lightnets.lift"),
    ("lightnets.cli", "lightnets"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lightnets modules ``name`` imports, anywhere in its file (a package's __init__ stands for the package)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("lightnets") and target != name:
                found.add(target)
    return found


def floor(name: str) -> int:
    best, level = "", None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    assert level is not None, f"{name} is on no floor: add it to FLOORS and docs/ARCHITECTURE.md"
    return level


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_no_module_imports_a_floor_above_its_own():
    upward = sorted(f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
                    for a, targets in graph().items() for b in targets if floor(b) > floor(a))
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_checker_sees_an_upward_import_and_a_circle(tmp_path):
    """The two rules can fail: a lower-floor module importing the CLI, and two modules importing each other."""
    assert floor("lightnets.models.vovnet") < floor("lightnets.cli.classify")
    assert floor("lightnets.train.checkpoint") < floor("lightnets.train.classify")
    source = tmp_path / "lightnets" / "models" / "bad.py"
    source.parent.mkdir(parents=True)
    source.write_text("from ..cli import main\n\ndef f():\n    from . import other\n")
    known = {"lightnets", "lightnets.cli", "lightnets.models", "lightnets.models.bad", "lightnets.models.other"}
    assert imports("lightnets.models.bad", source, known) == {"lightnets.cli", "lightnets.models.other"}


def test_no_module_is_over_400_lines():
    long = sorted(f"{name}: {n} lines" for name, path in modules().items()
                  if (n := len(path.read_text().splitlines())) > 400)
    assert not long, "\n".join(long)


def test_every_module_imports_on_its_own():
    """A circle through a package's __init__ (which the static check does not follow) fails here: each module is
    imported first, in a fresh interpreter, with lightnets' modules cleared between them. The modules are split
    between two interpreters run side by side, one per core."""
    names = sorted(n for n in modules() if not n.endswith("__main__"))
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'lightnets' or m.startswith('lightnets.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as err:\n"
        "        failed.append(f'{name}: {err}')\n"
        "print('\\n'.join(failed))\n"
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, *names[i::2]], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=PACKAGE.parent) for i in range(2)]
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-2000:]
        assert not out.strip(), out
