"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) for scripts/api-fuzz.

Works around a CPython 3.11 bug, not a finding: Hypothesis describes a lambda by parsing its
module's source with `ast.parse`, and deep in a recursive strategy 3.11 can raise
`SystemError: AST constructor recursion depth mismatch` (python/cpython#106905). The
description only feeds a strategy's repr; on that error it becomes Hypothesis's own
"unknown" description, and the data generated is the same.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description
