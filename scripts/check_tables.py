#!/usr/bin/env python3
"""Table ownership: a table is read or written only by the crate that owns it.

docs/architecture.md declares, between `<!-- tables -->` markers, each crate's tables
(`crate: table, table`) and, on `shared crate: table, ...` lines, the few tables of another
owner that a crate may read (never write), each with its reason. This lists the tables each
crate's SQL names (reads: `FROM`, `JOIN`; writes: `INSERT INTO`, `UPDATE`, `DELETE FROM`,
`TRUNCATE`, `LOCK TABLE`, `ALTER TABLE`; a table of the migrations, in the crate's non-test
sources) and fails on any use the declaration does not allow, on a table without an owner and on
a declared table no migration creates.

Usage: check_tables.py [--list]   (--list prints what each crate's SQL names)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
NAME = r"\s+(?:ONLY\s+)?([a-z_][a-z0-9_]*)"
WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|LOCK\s+TABLE|ALTER\s+TABLE)" + NAME)
READ = re.compile(r"(?<!DELETE )\b(?:FROM|JOIN)" + NAME)
CREATE = re.compile(r"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)", re.I)


def migration_tables():
    tables = set()
    for sql in sorted((ROOT / "migrations").glob("*.sql")):
        tables.update(CREATE.findall(sql.read_text()))
    return tables


def canonical(name, tables):
    # The trail's partitions are the trail.
    if name.startswith("audit_events"):
        return "audit_events"
    return name if name in tables else None


def non_test(text):
    """The source without its unit-test module (tests set up other crates' rows)."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
    return text[: cut.start()] if cut else text


def used(tables):
    """{crate: {table: "write" or "read"}} for each crate's non-test sources."""
    found = {}
    for src in sorted(ROOT.glob("crates/*/src")):
        crate = src.parent.name
        names = {}
        for rs in src.rglob("*.rs"):
            text = non_test(rs.read_text())
            for kind, pattern in (("read", READ), ("write", WRITE)):
                for name in pattern.findall(text):
                    table = canonical(name, tables)
                    if table and names.get(table) != "write":
                        names[table] = kind
        if names:
            found[crate] = names
    return found


def declared():
    text = DOC.read_text()
    match = re.search(r"<!-- tables -->\s*```\s*\n(.*?)```\s*<!-- /tables -->", text, re.S)
    if not match:
        sys.exit(f"{DOC}: no <!-- tables --> block")
    owners, shared = {}, {}
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, rest = line.partition(":")
        names = [n.strip() for n in rest.split(",") if n.strip()]
        if key.startswith("shared "):
            # `shared crate: table, ...`: tables of other owners this crate may read.
            shared.setdefault(key.removeprefix("shared ").strip(), set()).update(names)
        else:
            for name in names:
                owners[name] = key.strip()
    return owners, shared


def main():
    tables = migration_tables()
    uses = used(tables)
    if "--list" in sys.argv:
        for crate, names in sorted(uses.items()):
            print(f"{crate}: {', '.join(f'{t} ({k})' for t, k in sorted(names.items()))}")
        return
    owners, shared = declared()
    failures = []
    for table in sorted(set(owners) - tables - {"audit_events"}):
        failures.append(f"docs/architecture.md declares `{table}`, which no migration creates")
    for table in sorted(tables - set(owners)):
        if not table.startswith("audit_events"):
            failures.append(f"`{table}` has no owner in docs/architecture.md")
    for crate, names in sorted(uses.items()):
        for table, kind in sorted(names.items()):
            owner = owners.get(table)
            if owner == crate or (kind == "read" and table in shared.get(crate, set())):
                continue
            failures.append(f"{crate} {kind}s `{table}`, owned by {owner}")
    if failures:
        print("table ownership (scripts/check_tables.py):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        sys.exit(1)
    print(f"table ownership: {len(owners)} tables, {len(uses)} crates, every use allowed")


if __name__ == "__main__":
    main()
