"""The layout holds: imports point downwards, no module imports itself round a cycle, modules stay short.

The import graph is read from the sources (every ``import``, at module level or inside a function),
and names imported from a package's ``__init__`` are followed to the private module that defines
them, so a cycle through a package's public face is still a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hpo", "training", "storage")
MAX_LINES = 500  # a library module longer than this holds more than one job

# Each wing (a package, or a module of hpo) and the wings it may import; anything not listed is
# a layering error. Read bottom-up: training and storage know nothing of hpo; in hpo, tracking
# watches studies but knows nothing of models or workers, and only the CLI sees everything.
LOW = {"training", "storage", "hpo.errors", "hpo.records", "hpo.optuna_compat", "hpo.mlflow_compat"}
ALLOWED: dict[str, set[str]] = {
    "hpo": set(),  # an empty face
    "training": set(),
    "storage": set(),
    "hpo.errors": {"training", "storage"},
    "hpo.records": set(),
    "hpo.optuna_compat": set(),
    "hpo.mlflow_compat": set(),
    "hpo.space": LOW,
    "hpo.data": LOW,
    "hpo.study": LOW | {"hpo.space"},
    "hpo.tracking": LOW | {"hpo.space", "hpo.study"},
    "hpo.models": LOW | {"hpo.space", "hpo.study", "hpo.tracking"},
    "hpo.workers": LOW | {"hpo.space", "hpo.study", "hpo.tracking"},
    "hpo.dashboard": LOW | {"hpo.study"},
    "hpo.testing": LOW,  # shared by tests and benchmarks
    "hpo.cli": LOW
    | {"hpo.space", "hpo.study", "hpo.tracking", "hpo.models", "hpo.workers", "hpo.data", "hpo.dashboard"},
}
# Outside the project: what some modules must never load, even inside a function.
FORBIDDEN_EXTERNAL = {
    "training": {"optuna", "mlflow", "sqlalchemy"},
    "storage": {"mlflow", "torch", "timm"},
    "hpo.models._bundle": {"mlflow", "pandas"},  # the bundle format stands without MLflow
    "hpo.models._ensemble": {"mlflow", "pandas"},
}


def _modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    files = [p for package in packages for p in (root / package).rglob("*.py")]
    return {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def _imports(path: Path, module: str) -> list[tuple[str, tuple[str, ...]]]:
    """(imported module, names) for every import statement of ``module``, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((base, tuple(alias.name for alias in node.names)))
    return found


def _lazy_exports(path: Path, package: str) -> dict[str, str]:
    """A face that loads its names on first use lists them in its stub, ``__init__.pyi``, as
    ``from ._module import name as name``: name -> the module that defines it."""
    stub = path.with_suffix(".pyi")
    if not stub.exists():
        return {}
    return {
        alias.name: f"{package}.{node.module}"
        for node in ast.walk(ast.parse(stub.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports, names from a package face followed to their module."""
    modules = _modules(root, packages)
    imports = {m: _imports(p, m) for m, p in modules.items()}
    lazy = {m: _lazy_exports(p, m) for m, p in modules.items() if p.name == "__init__.py"}

    def defining(target: str, name: str) -> str:
        if f"{target}.{name}" in modules:
            return f"{target}.{name}"
        if modules.get(target, Path()).name == "__init__.py":
            if name in lazy[target]:
                return lazy[target][name]
            for source, names in imports[target]:
                if name in names and source in modules and source != target:
                    return defining(source, name)
        return target

    edges = {}
    for module in modules:
        deps = set()
        for target, names in imports[module]:
            if target.split(".")[0] in packages:
                deps |= {defining(target, n) for n in names} if names else {target}
        edges[module] = {d for d in deps if d in modules and d != module and modules[d].name != "__init__.py"}
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[str]:
    cycles, done = set(), set()

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(edges.get(module, ())):
            if dep in path:
                cycles.add(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(module)

    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    return sorted(cycles)


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "hpo" or len(parts) == 1 else f"hpo.{parts[1]}"


def test_no_import_cycles() -> None:
    assert find_cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle_through_a_package_face(tmp_path: Path) -> None:
    package = tmp_path / "pa"
    package.mkdir()
    (package / "__init__.py").write_text("from pa._x import X\nfrom pa._y import Y\n")
    (package / "_x.py").write_text(
        "def f():\n    from pa import Y  # inside a function: still an edge\n\nX = 1\n"
    )
    (package / "_y.py").write_text("from pa import X\n\nY = 2\n")
    assert find_cycles(import_graph(tmp_path, ("pa",))) == ["pa._x -> pa._y -> pa._x"]
    # the same through a face that loads its names on first use
    (package / "__init__.py").write_text(
        "import lazy_loader\n\n__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)\n"
    )
    (package / "__init__.pyi").write_text("from ._x import X as X\nfrom ._y import Y as Y\n")
    assert find_cycles(import_graph(tmp_path, ("pa",))) == ["pa._x -> pa._y -> pa._x"]


def test_imports_point_downwards() -> None:
    wrong = []
    for module, deps in import_graph().items():
        wing = _wing(module)
        allowed = ALLOWED[wing] | {wing}
        wrong += [f"{module} imports {dep}" for dep in sorted(deps) if _wing(dep) not in allowed]
    assert wrong == []


@pytest.mark.parametrize("prefix", sorted(FORBIDDEN_EXTERNAL))
def test_modules_never_load_what_they_must_not(prefix: str) -> None:
    offenders = [
        f"{module}: {target}"
        for module, path in _modules().items()
        if module == prefix or module.startswith(prefix + ".")
        for target, _ in _imports(path, module)
        if target.split(".")[0] in FORBIDDEN_EXTERNAL[prefix]
    ]
    assert offenders == []


def test_library_modules_are_short() -> None:
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_importing_training_loads_no_hpo_library() -> None:
    code = (
        "import sys, training, training.loop, training.cache, training.data, training.cv;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'optuna', 'mlflow', 'sqlalchemy', 'hpo', 'storage'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("face", ["training", "storage", "hpo.tracking", "hpo.workers"])
def test_every_name_a_lazy_face_lists_loads(face: str) -> None:
    """The stub is what editors see and what loads: a name listed there but defined nowhere fails here."""
    code = f"import {face} as f; [getattr(f, n) for n in f.__all__]; print(len(f.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(_lazy_exports(ROOT / face.replace(".", "/") / "__init__.py", face))


def _private_optuna(target: str) -> bool:
    return target.split(".")[0] == "optuna" and any(part.startswith("_") for part in target.split("."))


def test_optuna_internals_are_reached_only_through_the_compat_module() -> None:
    modules = {**_modules(), **_modules(ROOT, ("benchmarks",))}
    offenders = [
        f"{module}: {target}"
        for module, path in modules.items()
        if module != "hpo.optuna_compat"
        for target, _ in _imports(path, module)
        if _private_optuna(target)
    ]
    assert offenders == []


def test_benchmarks_import_nothing_from_tests() -> None:
    offenders = [
        f"{module}: {target}"
        for module, path in _modules(ROOT, ("benchmarks",)).items()
        for target, _ in _imports(path, module)
        if target.split(".")[0] == "tests"
    ]
    assert offenders == []
