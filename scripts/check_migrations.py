#!/usr/bin/env python3
"""The migration guard: a migration that has landed never changes.

sqlx records each applied migration's checksum and refuses to start against a database whose
history differs, so an edited migration that reached main would stop every deployed clinic at
its next start (or, applied fresh, give new clinics a schema old ones never got). This compares
every `migrations/*.sql` with `migrations/checksums.sha256`, which records each migration once,
when it lands: an edited or deleted migration fails, and so does a new one not yet recorded
(`scripts/check_migrations.py --record` adds new ones and never rewrites a recorded line, so a
change to a recorded checksum shows in review). The hosted workflow also compares with main.

Usage: check_migrations.py [--record]
"""

import hashlib
import sys
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
MANIFEST = MIGRATIONS / "checksums.sha256"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recorded():
    entries = {}
    if MANIFEST.exists():
        for line in MANIFEST.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                checksum, name = line.split(maxsplit=1)
                entries[name.strip()] = checksum
    return entries


def main():
    record = sys.argv[1:] == ["--record"]
    entries = recorded()
    present = {p.name: p for p in sorted(MIGRATIONS.glob("*.sql"))}
    problems = []
    for name, checksum in entries.items():
        if name not in present:
            problems.append(f"{name} was recorded but is gone: a landed migration is never deleted")
        elif digest(present[name]) != checksum:
            problems.append(f"{name} changed after it landed: write a new migration instead")
    new = [name for name in present if name not in entries]
    if new and record:
        with MANIFEST.open("a") as out:
            if not entries:
                out.write("# sha256 of each landed migration: appended by scripts/check_migrations.py --record, never edited\n")
            for name in new:
                out.write(f"{digest(present[name])}  {name}\n")
        print(f"recorded {len(new)} new migration(s): {', '.join(new)}")
    elif new:
        problems.extend(f"{name} is new and not recorded: run scripts/check_migrations.py --record" for name in new)
    if problems:
        print("migration guard failed:", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    if not record:
        print(f"migrations: {len(present)} unchanged since they landed")


if __name__ == "__main__":
    main()
