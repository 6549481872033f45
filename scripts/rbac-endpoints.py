#!/usr/bin/env python3
"""Regenerates the endpoint table at the end of docs/rbac.md from the route table.

A test (crates/api/tests/api/rbac.rs) checks the two agree; this keeps the table easy to
refresh after adding a route."""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
routes = (root / "crates/api/src/routes/mod.rs").read_text()
names = dict(
    re.findall(r'(\w+) => "([a-z_:]+)", "', (root / "crates/rbac/src/permission.rs").read_text())
)
rows = []
for method, path, access, variant in re.findall(
    r'route\(\s*Method::(\w+),\s*"([^"]+)",\s*\w+,\s*(?:None|(?:audited|changes)\([^)]*\)),\s*'
    r'(PUBLIC|SESSION|needs\(Permission::(\w+)\))',
    routes,
):
    needs = {"PUBLIC": "public", "SESSION": "session"}.get(access) or f"`{names[variant]}`"
    rows.append((path, method, f"| {method} | `{path}` | {needs} |"))
rows.sort()
doc_path = root / "docs/rbac.md"
doc = doc_path.read_text()
head = doc[: doc.index("| Method | Path | Requires |")]
table = "| Method | Path | Requires |\n|---|---|---|\n" + "\n".join(r[2] for r in rows) + "\n"
doc_path.write_text(head + table)
print(f"{len(rows)} routes")
