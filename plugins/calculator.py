"""An example server-side tool: arithmetic, parsed with `ast` and never `eval`.

Offered through `register_tools`; models get it only where
`[plugins.settings.tools]` says so.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from gateway import hookimpl

MAX_LENGTH = 200
MAX_MAGNITUDE = 10**100
MAX_EXPONENT = 64

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}

PARAMETERS = {
    "type": "object",
    "properties": {"expression": {"type": "string", "description": "e.g. '2 * (3 + 4) / 5'"}},
    "required": ["expression"],
}


def calculate(expression: str) -> str:
    """The value of an arithmetic expression: numbers, + - * / // % ** and parentheses."""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    return str(_evaluate(tree.body))


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        value = _UNARY[type(node.op)](_evaluate(node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponents above {MAX_EXPONENT} are not allowed")
        value = _BINARY[type(node.op)](left, right)
    else:
        raise ValueError(f"unsupported element: {ast.unparse(node)!r}")
    if isinstance(value, complex) or abs(value) > MAX_MAGNITUDE:
        raise ValueError("the result is out of range")
    return value


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    register(
        "calculator",
        calculate,
        description="Evaluate an arithmetic expression exactly; use it for any arithmetic.",
        parameters=PARAMETERS,
    )
