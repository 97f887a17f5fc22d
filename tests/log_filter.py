"""The part of Cloud Logging's query language the log-based metrics use, evaluated on log entries
shaped as Cloud Run stores the service's stdout JSON lines. Anything outside that part is a
`FilterSyntaxError`, so a metric cannot quietly depend on syntax this evaluator does not know.

Supported: comparisons `FIELD = "text"`, `FIELD = (value OR value ...)`, `FIELD != / > / >= / < / <= value`,
`FIELD:*` (present); `AND` (or a space), `OR` (binding tighter than AND, as in Cloud Logging), `NOT`,
parentheses. Values: quoted strings (compared without regard to case), numbers, `true`/`false`, severities.
"""

from __future__ import annotations

import json
import re
from typing import Any

SEVERITIES = {"DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400, "ERROR": 500, "CRITICAL": 600,
              "ALERT": 700, "EMERGENCY": 800}
_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op>>=|<=|!=|=|>|<|:)|(?P<paren>[()])|(?P<word>[^\s()=<>!:"]+))')


class FilterSyntaxError(ValueError):
    """A filter uses syntax outside the supported part."""


def log_entry(line: str, service: str) -> dict[str, Any] | None:
    """A stdout line as Cloud Run's logging agent stores it: `severity` and the trace become entry
    fields, `time` the timestamp, the rest `jsonPayload`; None for lines that are not JSON objects."""
    try:
        payload = json.loads(line)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    severity = payload.pop("severity", "DEFAULT")
    timestamp = payload.pop("time", None)
    trace = payload.pop("logging.googleapis.com/trace", None)
    return {"severity": severity, "timestamp": timestamp, "trace": trace, "jsonPayload": payload,
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}}}


def field(entry: dict[str, Any], path: str) -> Any:
    """`jsonPayload.a.b` of an entry; None when absent."""
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def matches(filter_text: str, entry: dict[str, Any]) -> bool:
    parser = _Parser(_tokens(filter_text))
    expression = parser.conjunction()
    if parser.peek() is not None:
        raise FilterSyntaxError(f"unexpected {parser.peek()[1]!r}")
    return expression(entry)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterSyntaxError(f"cannot read {text[position:]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self._tokens = tokens
        self._at = 0

    def peek(self) -> tuple[str, str] | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterSyntaxError("unexpected end of filter")
        self._at += 1
        return token

    def conjunction(self) -> Any:  # a AND b, or a b (implicit AND)
        parts = [self.disjunction()]
        while self.peek() is not None and self.peek() != ("paren", ")"):
            if self.peek() == ("word", "AND"):
                self.take()
            parts.append(self.disjunction())
        return lambda entry: all(part(entry) for part in parts)

    def disjunction(self) -> Any:
        parts = [self.negation()]
        while self.peek() == ("word", "OR"):
            self.take()
            parts.append(self.negation())
        return lambda entry: any(part(entry) for part in parts)

    def negation(self) -> Any:
        if self.peek() == ("word", "NOT"):
            self.take()
            inner = self.negation()
            return lambda entry: not inner(entry)
        if self.peek() == ("paren", "("):
            self.take()
            inner = self.conjunction()
            self._expect(("paren", ")"))
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        kind, path = self.take()
        if kind != "word" or not re.fullmatch(r"[A-Za-z_][\w.]*", path):
            raise FilterSyntaxError(f"expected a field, got {path!r}")
        kind, op = self.take()
        if kind != "op":
            raise FilterSyntaxError(f"expected an operator after {path}, got {op!r}")
        if op == ":":
            if self.take() != ("word", "*"):
                raise FilterSyntaxError("only FIELD:* (present) is supported for ':'")
            return lambda entry: field(entry, path) is not None
        values = self._values()
        return lambda entry: any(_compare(field(entry, path), op, value, path) for value in values)

    def _values(self) -> list[Any]:
        if self.peek() != ("paren", "("):
            return [_literal(self.take())]
        self.take()
        values = [_literal(self.take())]
        while self.peek() == ("word", "OR"):
            self.take()
            values.append(_literal(self.take()))
        self._expect(("paren", ")"))
        return values

    def _expect(self, token: tuple[str, str]) -> None:
        if self.take() != token:
            raise FilterSyntaxError(f"expected {token[1]!r}")


def _literal(token: tuple[str, str]) -> Any:
    kind, text = token
    if kind == "string":
        return json.loads(text)
    if kind != "word":
        raise FilterSyntaxError(f"expected a value, got {text!r}")
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    if text in ("true", "false") or text in SEVERITIES:
        return text
    raise FilterSyntaxError(f"unquoted value {text!r}")


def _compare(actual: Any, op: str, expected: Any, path: str) -> bool:
    if actual is None:
        return op == "!="
    if path == "severity":
        actual, expected = SEVERITIES[str(actual)], SEVERITIES[str(expected)]
    elif not (isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool)):
        actual = ("true" if actual else "false") if isinstance(actual, bool) else str(actual)
        expected = _number_text(expected) if isinstance(expected, float) else str(expected)
    if isinstance(actual, str):  # Cloud Logging compares strings without regard to case
        actual, expected = actual.lower(), expected.lower()
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    return {">": actual > expected, ">=": actual >= expected, "<": actual < expected, "<=": actual <= expected}[op]


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() else str(number)
