"""A source check for a Numba bug that CI's Python cannot show.

On Python >= 3.12 Numba's parfor pass fails to compile a ``prange`` loop
that reduces into a scalar (``total += ...``) when the loop body also holds a
branch or an inner loop ("unexpected cycle in lookup()", numba#10132): seen on
the GPU machine's Python 3.12 and on 3.13, where every ``fastbp.train`` on the
CPU failed. CI runs Python 3.11, which compiles such loops, so this test
holds the kernels to the shape that compiles everywhere: a prange body that
reduces is straight-line code calling functions Numba does not inline.
"""

import ast
import pathlib

import pytest

KERNELS = pathlib.Path(__file__).resolve().parents[1] / "kernels"


def inlines_always(call):
    """Whether ``call`` is ``njit(..., inline="always", ...)``."""
    return isinstance(call, ast.Call) and any(
        kw.arg == "inline" and getattr(kw.value, "value", None) == "always"
        for kw in call.keywords)


def inlined_functions(tree):
    """Names of the module's always-inlined functions: ``@njit(inline="always")``
    definitions and ``name = njit(inline="always")(body)`` assignments."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(map(inlines_always, node.decorator_list)):
            names.add(node.name)
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
              and inlines_always(node.value.func)):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def is_prange(loop):
    call = loop.iter
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "prange")


def reduction_problems(path):
    """(line, why) for each prange loop of ``path`` that reduces into a
    scalar and holds a branch, a loop, or a call of an always-inlined function."""
    tree = ast.parse(path.read_text())
    inlined = inlined_functions(tree)
    problems = []
    for loop in [n for n in ast.walk(tree) if isinstance(n, ast.For) and is_prange(n)]:
        assigned_inside = {m.id for n in ast.walk(loop) if isinstance(n, (ast.Assign, ast.For))
                           for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                           for m in ast.walk(t) if isinstance(m, ast.Name)}
        reduces = any(isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)
                      and n.target.id not in assigned_inside for n in ast.walk(loop))
        if not reduces:
            continue
        for node in [n for stmt in loop.body for n in ast.walk(stmt)]:
            if isinstance(node, (ast.If, ast.IfExp, ast.For, ast.While, ast.BoolOp)):
                problems.append((loop.lineno, f"{type(node).__name__} in the body"))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in inlined):
                problems.append((loop.lineno, f"inlined call of {node.func.id}"))
    return problems


@pytest.mark.parametrize("path", sorted(KERNELS.glob("cpu*.py")), ids=lambda p: p.name)
def test_prange_reductions_have_straight_line_bodies(path):
    assert reduction_problems(path) == []


def test_the_check_finds_the_shape_that_failed(tmp_path):
    """The loop that broke Python 3.12 (count_misclassified before the fix)."""
    bad = tmp_path / "cpu_bad.py"
    bad.write_text(
        "@njit(inline='always')\n"
        "def _argmax_row(Z, i):\n"
        "    best = 0\n"
        "    return best\n"
        "def count(Z, labels):\n"
        "    wrong = 0\n"
        "    for i in prange(Z.shape[0]):\n"
        "        wrong += _argmax_row(Z, i) != labels[i]\n"
        "    return wrong\n"
        "_row = njit(inline='always')(losses.row)\n"
        "def rows(Z):\n"
        "    total = 0\n"
        "    for i in prange(Z.shape[0]):\n"
        "        total += _row(Z, i)\n"
        "    return total\n"
        "def nonzero(A):\n"
        "    total = 0\n"
        "    for i in prange(A.shape[0]):\n"
        "        c = 0\n"
        "        for k in range(A.shape[1]):\n"
        "            c += A[i, k] != 0\n"
        "        total += c\n"
        "    return total\n")
    assert reduction_problems(bad) == [(7, "inlined call of _argmax_row"),
                                       (13, "inlined call of _row"),
                                       (18, "For in the body")]
