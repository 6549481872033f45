#!/usr/bin/env python3
"""The compliance documents point at real tests: every `crate: file.rs: test` named in
docs/compliance/control-map.md must be a function in that file, every `crate: file.rs` a file
of that crate, and every `scripts/...` a script. A renamed or removed test fails the suite
instead of leaving the control map pointing at nothing.

Names follow the map's convention: `crate: file.rs: name` names a test, and the backticked names
after it in the same cell (`other_name`) are tests in the same file.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "compliance" / "control-map.md"
DOCS = ROOT / "docs" / "compliance"
REQUIRED = ["README.md", "privacy-policy.md", "baa.md", "risk-analysis.md",
            "incident-response.md", "rto-rpo.md", "control-map.md", "review-schedule.md"]


def find_file(crate, name):
    base = ROOT / "crates" / crate
    # A test file of that name first (src/ may hold a module of the same name).
    hits = sorted((("tests" not in p.parts), str(p)) for p in base.rglob(name) if "target" not in p.parts)
    return pathlib.Path(hits[0][1]) if hits else None


def check_cell(cell, problems):
    current = None
    for token in re.findall(r"`([^`]+)`", cell):
        parts = [p.strip() for p in token.split(":")]
        if len(parts) >= 2 and parts[1].endswith(".rs"):
            path = find_file(parts[0], parts[1])
            if path is None:
                problems.append(f"{parts[0]}: {parts[1]}: no such file")
                current = None
                continue
            current = path.read_text()
            names = parts[2:]
        elif re.fullmatch(r"[a-z][a-z0-9_]+", token) and "_" in token and current is not None:
            names = [token]
        else:
            if token.startswith("scripts/") and not (ROOT / token.split()[0]).exists():
                problems.append(f"{token}: no such script")
            continue
        for name in names:
            if not re.search(rf"\bfn {re.escape(name)}\b", current):
                problems.append(f"{token}: no test named {name}")
        if names:
            counted.append(token)


counted = []


def main():
    problems = [f"docs/compliance/{name} is missing" for name in REQUIRED
                if not (DOCS / name).exists()]
    for line in MAP.read_text().splitlines():
        if line.startswith("|"):
            for cell in line.split("|"):
                check_cell(cell, problems)
    if len(counted) < 40:
        problems.append(f"only {len(counted)} tests named in the control map; the parser may be broken")
    for problem in problems:
        print(f"control map: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"control map: {len(counted)} named tests exist")


if __name__ == "__main__":
    main()
