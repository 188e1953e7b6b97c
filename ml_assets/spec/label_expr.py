"""A small, safe evaluator of the simple Spark SQL label expressions `spec init` measures on a sample.

Grammar (case-insensitive keywords; anything else is an UnsupportedExpressionError naming it):

    expr       := or
    or         := and (OR and)*
    and        := not (AND not)*
    not        := NOT not | predicate
    predicate  := operand [ (= | == | != | <> | < | <= | > | >=) operand
                          | IS [NOT] NULL | [NOT] IN ( literal, ... ) ]
                | ( expr )
    operand    := column | number | 'string' | TRUE | FALSE

A bare column is a predicate (a bool column, e.g. `returned`). NULLs follow SQL's three-valued
logic (Arrow's Kleene kernels); like the spec's label rule (`coalesce(expr, false)`), a row whose
expression is NULL counts as negative.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ml_assets.spec.model import SpecError

if TYPE_CHECKING:
    import pyarrow as pa


class UnsupportedExpressionError(SpecError):
    """A label expression outside the grammar above; the message names the token and position."""


_TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<string>'(?:[^']|'')*')"
    r"|(?P<op><=|>=|<>|!=|==|=|<|>|\(|\)|,)|(?P<word>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`))"
)
_KEYWORDS = {"and", "or", "not", "is", "null", "in", "true", "false"}
_COMPARE = {"=": "equal", "==": "equal", "!=": "not_equal", "<>": "not_equal", "<": "less",
            "<=": "less_equal", ">": "greater", ">=": "greater_equal"}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise UnsupportedExpressionError(
                f"label expression {text!r}: unsupported text {text[position:].strip()[:20]!r} at position {position}"
            )
        kind = match.lastgroup
        tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, table: pa.Table):
        self.text, self.table = text, table
        self.tokens = _tokens(text)
        self.at = 0
        self.columns: set[str] = set()

    def fail(self, problem: str) -> UnsupportedExpressionError:
        where = self.tokens[self.at][2] if self.at < len(self.tokens) else len(self.text)
        return UnsupportedExpressionError(
            f"label expression {self.text!r}: {problem} at position {where}; supported: comparisons of a column "
            "with a literal or column, IS [NOT] NULL, [NOT] IN (...), AND, OR, NOT, parentheses, a bool column"
        )

    def peek(self) -> tuple[str, str] | None:
        if self.at >= len(self.tokens):
            return None
        kind, value, _ = self.tokens[self.at]
        return kind, value.lower() if kind == "word" and not value.startswith("`") else value

    def take(self, *expected: str) -> bool:
        token = self.peek()
        if token is not None and token[1] in expected:
            self.at += 1
            return True
        return False

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.tokens[self.at][1]!r}")
        return value

    def or_(self) -> Any:
        import pyarrow.compute as pc

        value = self.and_()
        while self.take("or"):
            value = pc.or_kleene(value, self.and_())
        return value

    def and_(self) -> Any:
        import pyarrow.compute as pc

        value = self.not_()
        while self.take("and"):
            value = pc.and_kleene(value, self.not_())
        return value

    def not_(self) -> Any:
        import pyarrow.compute as pc

        if self.take("not"):
            return pc.invert(self.not_())
        return self.predicate()

    def predicate(self) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.take("("):
            value = self.or_()
            if not self.take(")"):
                raise self.fail("missing ')'")
            return value
        left = self.operand()
        token = self.peek()
        if token is not None and token[1] in _COMPARE:
            self.at += 1
            return getattr(pc, _COMPARE[token[1]])(left, self.operand())
        if self.take("is"):
            negate = self.take("not")
            if not self.take("null"):
                raise self.fail("expected NULL after IS")
            return pc.is_valid(left) if negate else pc.is_null(left)
        negate = self.take("not")
        if self.take("in"):
            if not self.take("("):
                raise self.fail("expected '(' after IN")
            values = [self.literal()]
            while self.take(","):
                values.append(self.literal())
            if not self.take(")"):
                raise self.fail("missing ')' after IN list")
            found = pc.is_in(left, value_set=pa.array(values))
            found = pc.if_else(pc.is_null(left), pa.scalar(None, pa.bool_()), found)
            return pc.invert(found) if negate else found
        if negate:
            raise self.fail("expected IN after NOT")
        if isinstance(left, pa.Scalar) or not pa.types.is_boolean(left.type):
            raise self.fail("a bare operand must be a bool column")
        return left

    def literal(self) -> Any:
        token = self.peek()
        if token is None:
            raise self.fail("expected a literal")
        kind, value = token
        self.at += 1
        if kind == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if value in ("true", "false"):
            return value == "true"
        self.at -= 1
        raise self.fail(f"expected a literal, got {self.tokens[self.at][1]!r}")

    def operand(self) -> Any:
        import pyarrow as pa

        token = self.peek()
        if token is None:
            raise self.fail("expected a column or a literal")
        kind, value = token
        if kind == "word" and value not in _KEYWORDS:
            name = self.tokens[self.at][1].strip("`")
            if self.at + 1 < len(self.tokens) and self.tokens[self.at + 1][1] == "(":
                raise self.fail(f"unsupported function call {name}(...)")
            if name not in self.table.column_names:
                raise UnsupportedExpressionError(
                    f"label expression {self.text!r}: column {name!r} is not in the sample; its columns: "
                    f"{self.table.column_names}"
                )
            self.at += 1
            self.columns.add(name)
            return self.table.column(name)
        if kind == "op" and value == "(":
            raise self.fail("parentheses around an operand")
        return pa.scalar(self.literal())


def evaluate_label(expression: str, table: pa.Table) -> tuple[Any, set[str]]:
    """(bool array, columns used): the expression per row, NULL read as false as the label rule does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parser = _Parser(expression, table)
    try:
        value = parser.parse()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UnsupportedExpressionError(f"label expression {expression!r}: types do not compare ({exc})") from None
    if isinstance(value, pa.Scalar) or not pa.types.is_boolean(value.type):
        raise UnsupportedExpressionError(f"label expression {expression!r} is not a condition on the sample's columns")
    return pc.fill_null(value, False), parser.columns
