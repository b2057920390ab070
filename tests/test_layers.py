"""The dependency rule of DESIGN §1, checked on the source: each layer imports only the layers
below it, and plugins and example apps import only the public API, `voicestack`.

identity/config ← store ← functions ← auth ← reactive, scheduler ← agent ← voice ← runtime ←
http ← scale ← serve ← cli. Imports under `if TYPE_CHECKING:` do not count: they cost nothing at run
time and let a lower layer name a higher one's types.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first. Modules of one layer may import each other only within their own package.
LAYERS: list[set[str]] = [
    {"voicestack.config_tables"},  # the config file's table models, which Settings holds
    {
        "voicestack.identity",
        "voicestack.ids",
        "voicestack.config",
        "voicestack.jsoncodec",
        "voicestack.echo",
    },
    {"voicestack.store"},
    {"voicestack.functions"},
    {"voicestack.auth"},
    {"voicestack.reactive", "voicestack.scheduler"},
    {"voicestack.agent"},
    {"voicestack.voice"},
    {"voicestack.schema"},
    {"voicestack.runtime"},
    {"voicestack.http"},
    {"voicestack.scale"},
    {"voicestack.serve"},
    {"cli"},
    {"voicestack.__main__"},
]
# Outside the stack: the public API (it only re-exports, lazily; the layers may read its
# `__version__`), the OpenAI-compatible test provider (imports nothing of ours), and the example
# apps (the public API only).
PUBLIC_API = "voicestack"
OUTSIDE = {"voicestack.testing", "voicestack.examples"}


def unit_of(module: str) -> str | None:
    """The layer member (a package or a top module) that `module` belongs to."""
    for layer in LAYERS:
        for unit in layer:
            if module == unit or module.startswith(unit + "."):
                return unit
    return None


def level_of(unit: str) -> int:
    return next(n for n, layer in enumerate(LAYERS) if unit in layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def run_time_imports(tree: ast.Module, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import that runs, absolute, outside `if TYPE_CHECKING:`."""

    def walk(node: ast.AST) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (item for stmt in child.orelse for item in walk_one(stmt))
                continue
            yield from walk_one(child)

    def walk_one(node: ast.AST) -> Iterator[tuple[int, str]]:
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from voicestack import jsoncodec` imports a module; `import X` of a name does not.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate == "voicestack.__version__":
                    yield node.lineno, "voicestack.identity"  # a leaf's worth: a string
                    continue
                is_module = (REPO / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    REPO / candidate.replace(".", "/")
                ).is_dir()
                yield node.lineno, candidate if is_module else base
        else:
            yield from walk(node)

    yield from walk(tree)


def sources(*roots: str) -> list[Path]:
    return sorted(
        p for root in roots for p in (REPO / root).rglob("*.py") if "build" not in p.parts
    )


def violations() -> list[str]:
    found = []
    for path in sources("voicestack", "cli"):
        name = module_name(path)
        if name == PUBLIC_API or any(name.startswith(o) for o in OUTSIDE):
            continue
        unit = unit_of(name)
        assert unit is not None, f"{name} belongs to no layer: add it to LAYERS in {__file__}"
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, target in run_time_imports(ast.parse(path.read_text()), package):
            if not (target == PUBLIC_API or target.startswith(("voicestack.", "cli"))):
                continue
            where = f"{path.relative_to(REPO)}:{line} → {target}"
            if target == PUBLIC_API or any(target.startswith(o) for o in OUTSIDE):
                found.append(f"{where} (the public API and the test provider are for apps)")
                continue
            target_unit = unit_of(target)
            if target_unit is None or target_unit == unit:
                continue
            if level_of(target_unit) >= level_of(unit):
                found.append(f"{where} ({target_unit} is not below {unit})")
    return found


def test_every_layer_imports_only_the_layers_below_it() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    "root",
    ["plugins", "tests/plugins", "voicestack/examples"],
)
def test_plugins_and_example_apps_import_only_the_public_api(root: str) -> None:
    found = []
    for path in sources(root):
        if "tests" in path.relative_to(REPO / root).parts:
            continue  # a plugin's own tests may reach inside, like any test
        tree = ast.parse(path.read_text())
        for line, target in run_time_imports(tree, module_name(path).rpartition(".")[0]):
            if target.startswith("voicestack."):
                found.append(f"{path.relative_to(REPO)}:{line} → {target}")
    assert found == []
