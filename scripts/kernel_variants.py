"""Variants of a kernels module compiled from its own source, for the
profiling scripts (gpu_profile.py, cpu_profile.py): the same code with some
calls removed or replaced, timed in place of the original; and the fresh
network each timed run starts from."""

import ast
import types

import fastbp


def module_from(name, source, original):
    """A module compiled from (a variant of) ``original``'s source, whose
    relative imports resolve as the original's."""
    module = types.ModuleType(f"{original.__name__}_{name}")
    module.__package__ = original.__package__
    exec(compile(source, original.__file__, "exec"), module.__dict__)
    return module


class DropCalls(ast.NodeTransformer):
    """In the function ``function``: calls whose source starts with one of
    ``patterns`` become ``pass`` (or 0, where their result is assigned),
    those starting with a key of ``replace`` its value; an ``if`` whose test
    contains ``stop`` (the loop's stop on a non-finite cost) becomes ``if
    False``, so that garbage left by a dropped phase does not end the run
    early."""

    def __init__(self, patterns, replace, function="train_steps", stop="isfinite("):
        self.patterns, self.replace = patterns, replace
        self.function, self.stop = function, stop

    def visit_FunctionDef(self, node):
        if node.name == self.function:
            self.generic_visit(node)
        return node

    def visit_Expr(self, node):
        text = ast.unparse(node)
        for old, new in self.replace.items():
            if text.startswith(old):
                return ast.parse(new).body[0]
        return ast.Pass() if text.startswith(tuple(self.patterns)) else node

    def visit_Assign(self, node):
        """A dropped call whose result is kept (``n = list_rows(...)``) gives 0."""
        if ast.unparse(node.value).startswith(tuple(self.patterns)):
            node.value = ast.Constant(0)
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        if self.stop in ast.unparse(node.test):
            node.test = ast.Constant(False)
        return node


def variant_source(source, patterns, replace=None, **options):
    """``source`` with DropCalls(patterns, replace, **options) applied."""
    tree = DropCalls(patterns, replace or {}, **options).visit(ast.parse(source))
    return ast.fix_missing_locations(tree)


def fresh_weights(sizes):
    """(net, Ws, bs): a seed-0 network of ``sizes`` and copies of its weights
    and biases, for a stepper to train in place."""
    net = fastbp.Network(sizes, seed=0)
    return net, [W.copy() for W, _ in net.layers], [b.copy() for _, b in net.layers]
