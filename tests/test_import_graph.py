"""The package's import graph is acyclic (every import counts, also those inside functions)."""

import ast
from pathlib import Path

import tfsft

PACKAGE = Path(tfsft.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """tfsft module → the tfsft modules it imports (`from a import b` counts `a.b` when that is a module, else `a`)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                if not all(target in modules for target in targets):  # names defined in the module itself
                    targets.append(node.module)
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return path[path.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_tfsft_imports_form_no_cycle():
    graph = import_graph()
    assert "tfsft.config" in graph and "tfsft.tasks" in graph["tfsft.experiment"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_config_imports_no_task_and_tasks_import_no_training_loop():
    graph = import_graph()
    assert not {m for m in graph["tfsft.config"] if m.startswith("tfsft.tasks")}
    for module, imports in graph.items():
        if module.startswith("tfsft.tasks"):
            assert not imports & {"tfsft.training", "tfsft.run_dir", "tfsft.export", "tfsft.experiment"}, module
