"""The package's shape: no import cycle between femeso's modules (issue 20)."""

import ast
from pathlib import Path

import femeso

PACKAGE = Path(femeso.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The femeso modules ``path`` imports, at module level or inside functions.

    Imports under ``if TYPE_CHECKING:`` are left out (they never run). A function-level import
    is a dependency too: steppers -> adjoint -> steppers was such a cycle (issue 20), which this
    test finds in the code before the change.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("femeso"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("femeso"):
            found.add(node.module)  # and "from femeso import jobs" imports femeso.jobs
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # names that are not modules ("from femeso.x import f") are filtered out here
        edges[name] = {m for m in imports(path) if m in modules and m != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_femeso_modules():
    edges = graph()
    assert (
        "femeso.stepping.energy_stable" in edges
        and "femeso.stepping.adjoint" in edges["femeso.stepping.energy_stable"]
    )
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
