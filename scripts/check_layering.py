#!/usr/bin/env python3
"""Checks the crate layering that docs/architecture.md draws, from `cargo metadata` (no build).

- The internal dependency graph (normal dependencies between the workspace's crates) is exactly
  the one in the `layering` block of docs/architecture.md: the diagram is the real graph.
- No crate below the API depends on actix, directly or through anything it pulls in.
- No crate depends on the API or the binary but the binary (and the API's own test support).
- The low-level test kit does not depend on the API: testing a lower crate builds only it.
Exits non-zero naming every breach.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BELOW_API = ["clinicd-crypto", "clinicd-identity", "clinicd-audit", "clinicd-rbac",
             "clinicd-domain", "clinicd-files", "clinicd-secops", "clinicd-test-kit"]
WEB = ("actix-web", "actix-http", "actix-multipart", "actix-router", "utoipa-swagger-ui")


def metadata():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def declared_graph():
    """`crate -> dep, dep` lines between <!-- layering --> markers in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layering -->(.*?)<!-- /layering -->", text, re.S)
    if not block:
        sys.exit("docs/architecture.md has no <!-- layering --> block")
    graph = {}
    for line in block.group(1).splitlines():
        line = line.strip().strip("`")
        if "->" not in line:
            continue
        crate, deps = (part.strip() for part in line.split("->", 1))
        graph[crate] = {d.strip() for d in deps.split(",") if d.strip() and d.strip() != "(none)"}
    return graph


def main():
    data = metadata()
    members = {p["id"]: p for p in data["packages"] if p["id"] in data["workspace_members"]}
    names = {p["name"] for p in members.values()}
    by_id = {p["id"]: p for p in data["packages"]}
    nodes = {n["id"]: n for n in data["resolve"]["nodes"]}
    problems = []

    def normal_deps(package_id):
        return [d["pkg"] for d in nodes[package_id]["deps"]
                if any(k["kind"] is None for k in d["dep_kinds"])]

    def closure(package_id):
        seen, stack = set(), [package_id]
        while stack:
            for dep in normal_deps(stack.pop()):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return {by_id[d]["name"] for d in seen}

    actual = {}
    for pid, package in members.items():
        actual[package["name"]] = {by_id[d]["name"] for d in normal_deps(pid)} & names
        every_dep = {by_id[d["pkg"]]["name"] for d in nodes[pid]["deps"]}
        name = package["name"]
        if name in BELOW_API:
            web = sorted(closure(pid) & set(WEB))
            if web:
                problems.append(f"{name} depends on {', '.join(web)} (below the API: no web framework)")
        # Who may depend on what above it, in any kind of dependency (tests included): only
        # the binary on the API, only the API's test support on the API besides it, and
        # nothing on the binary.
        allowed = {"clinicd": {"clinicd-api", "clinicd-test-support"},
                   "clinicd-api": {"clinicd-test-support"},
                   "clinicd-test-support": {"clinicd-api"}}.get(name, set())
        upward = sorted(every_dep & {"clinicd", "clinicd-api", "clinicd-test-support"} - allowed - {name})
        if upward:
            problems.append(f"{name} depends on {', '.join(upward)} (a lower crate, even in tests)")
    declared = declared_graph()
    for crate in sorted(names | set(declared)):
        want, have = declared.get(crate), actual.get(crate)
        if want is None:
            problems.append(f"{crate} is missing from docs/architecture.md's layering block")
        elif have is None:
            problems.append(f"docs/architecture.md names {crate}, which is not a workspace crate")
        elif want != have:
            extra, missing = sorted(have - want), sorted(want - have)
            if extra:
                problems.append(f"{crate} depends on {', '.join(extra)}, which the docs do not draw")
            if missing:
                problems.append(f"the docs draw {crate} -> {', '.join(missing)}, which it does not depend on")
    if problems:
        print("layering check failed:", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"layering: {len(names)} crates as drawn; nothing below the API reaches actix")


if __name__ == "__main__":
    main()
