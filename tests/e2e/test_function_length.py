"""No function over 60 lines in the package or the benchmarks, from its def line to the last line of its body
(docstring and nested functions included; decorators not).

The L-BFGS step stays whole: one iteration of the method, its steps in the order of the algorithm.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60
EXEMPT = {"nst_lightning/optim/lbfgs.py: LBFGS.step"}


def function_lengths(path: Path, root: Path = ROOT) -> dict[str, int]:
    """{"file: Class.function.inner": lines} of every function and method in ``path`` (file: relative to ``root``)."""
    where = path.relative_to(root).as_posix()
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                lengths[f"{where}: {name}"] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), str(path)), "")
    return lengths


def lengths_under(folder: str) -> dict[str, int]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return {name: n for path in files for name, n in function_lengths(path).items()}


@pytest.mark.parametrize("folder", ["nst_lightning", "benchmarks"])
def test_no_function_is_over_60_lines(folder):
    lengths = lengths_under(folder)
    too_long = {name: n for name, n in lengths.items() if n > LIMIT and name not in EXEMPT}
    assert not too_long, f"over {LIMIT} lines (split them): {too_long}"


def test_the_exemption_is_current():
    lengths = lengths_under("nst_lightning")
    missing = sorted(name for name in EXEMPT if name not in lengths)
    assert not missing, f"exempt but not found (renamed or moved? update EXEMPT): {missing}"
    shortened = sorted(name for name in EXEMPT if lengths[name] <= LIMIT)
    assert not shortened, f"now at most {LIMIT} lines: remove them from EXEMPT: {shortened}"
