"""The import contract: the packages form floors and imports only go down (ARCHITECTURE.md).

Every module of ours is read (not imported) and each ``import`` of ours, at any depth in the
module (a function-local import counts too), is checked against the floor table. A back-arrow
fails with the importing module, its line and the floors involved.

Run alone: ``python -m pytest tests/test_floors.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zeebe_sim", "broker", "gateway", "storage")

# Floor of a module: the longest matching prefix wins. Higher floors may import lower ones.
FLOORS: dict[str, int] = {
    "zeebe_sim.ground": 0,
    "storage": 1,
    "broker.engine": 1,
    "broker": 2,
    "gateway": 2,
    "zeebe_sim": 3,
}
# Packages that must not know each other, whatever their floors: the gateway talks to brokers
# only over the wire, and the engine is pure logic that does not write files.
APART = {("storage", "broker.engine"), ("broker", "gateway"), ("broker.engine", "gateway")}
NAMES = {0: "ground", 1: "storage/engine", 2: "broker/gateway", 3: "roof"}


def floor_of(module: str) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for prefix, floor in FLOORS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, floor)
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from zeebe_sim import config`` imports the submodule zeebe_sim.config
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return found


def back_arrows(root: Path = ROOT) -> list[str]:
    """Every import of ours that goes up a floor or across to a sibling kept apart."""
    problems: dict[tuple[str, int], str] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            source = module_name(path, root)
            source_floor = floor_of(source)
            assert source_floor is not None, source
            for line, target in imports_of(path):
                target_floor = floor_of(target)
                if target_floor is None or target_floor[0] == source_floor[0]:
                    continue
                pair = (source_floor[0], target_floor[0])
                if target_floor[1] > source_floor[1] or pair in APART or pair[::-1] in APART:
                    # one report per import statement, for its module (not each name)
                    problems.setdefault(
                        (str(path.relative_to(root)), line),
                        f"{path.relative_to(root)}:{line}: {source} "
                        f"({NAMES[source_floor[1]]}) imports {target} "
                        f"({NAMES[target_floor[1]]})",
                    )
    return [problems[k] for k in sorted(problems)]


def test_imports_only_go_down() -> None:
    """No module imports a module of a higher floor, nor a package it must keep apart from."""
    assert back_arrows() == []


def test_the_contract_catches_a_back_arrow(tmp_path: Path) -> None:
    """A deliberately added back-arrow (the ground importing the broker) is reported."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "zeebe_sim" / "ground").mkdir()
    (tmp_path / "zeebe_sim" / "ground" / "__init__.py").write_text("")
    (tmp_path / "zeebe_sim" / "ground" / "ids.py").write_text(
        "def f():\n    from broker.partition import Partition\n"
    )
    (tmp_path / "gateway" / "rest.py").write_text("import broker.engine.processor\n")
    assert back_arrows(tmp_path) == [
        "gateway/rest.py:1: gateway.rest (broker/gateway) imports broker.engine.processor "
        "(storage/engine)",
        "zeebe_sim/ground/ids.py:2: zeebe_sim.ground.ids (ground) imports "
        "broker.partition (broker/gateway)",
    ]
