#!/usr/bin/env python3
"""Sets up a running clinicd for schema-driven fuzzing, then runs schemathesis over every operation.

Called by scripts/api-fuzz with the server already listening. It does what a clinic's first day
does, through the API and the command line: the first administrator changes the one-time
password and enrols TOTP; an account is created for each built-in role (dual control: the
operator approves with `clinicd admin approve`), changes its password and enrols TOTP; the front
desk registers a patient and puts the clinical roles on its care team. Then schemathesis runs every check against every operation once for each built-in
role (an account holding only that role), following the document's links between operations
(create a patient, then read it) in its stateful phase, in passes ordered so that no operation
ends a session another pass still needs.

Usage: api_fuzz.py BASE_URL CA_CERT CLINICD_BIN ADMIN_USERNAME ADMIN_OTP SCHEMATHESIS REPORT_DIR
Environment: FUZZ_MAX_EXAMPLES (per operation, default 25), FUZZ_SEED (default 20261202), FUZZ_PHASES
(default examples,coverage,fuzzing,stateful), FUZZ_WORKERS (default 2).
"""

import os
import subprocess
import sys

from api_client import Client

BASE, CA, CLINICD, ADMIN, ADMIN_OTP, SCHEMATHESIS, REPORT_DIR = sys.argv[1:8]
API = Client(BASE, CA)
call = API.call


# The built-in roles (docs/rbac.md), each fuzzed with an account holding only that role: what a
# role may do must answer by its schema, and what it may not must be a documented refusal.
ROLES = ["Staff", "Provider", "ReadOnly", "PrivacyOfficer", "RecordsManager"]


def main():
    admin_factor = API.first_login(ADMIN, ADMIN_OTP)
    admin = API.login(ADMIN, admin_factor)
    people = {}
    for role in ROLES:
        username = f"fuzz.{role.lower()}"
        factor = API.user_with_roles(admin, CLINICD, username, [role])
        people[role] = (username, factor, API.login(username, factor))
    # The front desk registers a patient and puts every clinical role on its care team, so the
    # clinical passes reach a real record, not only 404s.
    staff = people["Staff"][2]
    patient = call("POST", "/api/patients", {
        "given_name": "Fuzz", "family_name": "Patient", "date_of_birth": "1980-04-02",
        "sex": "female"}, staff, (201,))
    for role in ("Provider", "ReadOnly"):
        me = call("GET", "/api/auth/me", None, people[role][2])
        call("POST", f"/api/patients/{patient['id']}/care-team",
             {"user_id": me["user_id"], "reason": "fuzzing the API as this role"}, staff, (200, 201))

    os.makedirs(REPORT_DIR, exist_ok=True)
    config_path = os.path.join(REPORT_DIR, "schemathesis.toml")
    with open(config_path, "w") as out:
        out.write(CONFIG.format(max_examples=os.environ.get("FUZZ_MAX_EXAMPLES", "25")))
    # Passes in this order: an administrator's operations can disable or reset other accounts
    # (the fuzzer reuses ids it has seen), so the administrator comes after the clinical roles;
    # revoking sessions or logging out ends the session used, so those come last, each with a
    # session of its own.
    own_endings = "^/api/auth/(logout|sessions/[^/]+)$"
    admin_endings = "^/api/admin/users/[^/]+/revoke-sessions$"
    ending = f"{own_endings}|{admin_endings}"
    phases = os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing,stateful")
    passes = [(role, people[role][2], ["--exclude-path-regex", ending, "--phases", phases])
              for role in ROLES]
    passes.append(("Admin", admin, ["--exclude-path-regex", ending, "--phases", phases]))
    # The endings link to nothing: no stateful phase (schemathesis refuses one without links).
    phases = phases.replace(",stateful", "").replace("stateful,", "")
    staff_name, staff_factor, _ = people["Staff"]
    passes.append(("session endings (Staff)", API.login(staff_name, staff_factor),
                   ["--include-path-regex", own_endings, "--phases", phases]))
    passes.append(("session endings (Admin)", API.login(ADMIN, admin_factor),
                   ["--include-path-regex", admin_endings, "--phases", phases]))
    failed = []
    for name, token, filters in passes:
        print(f"==> schemathesis: {name}", file=sys.stderr, flush=True)
        command = [
            SCHEMATHESIS, "--config-file", config_path, "run", f"{BASE}/api/openapi.json",
            "--url", BASE, "--checks", "all", "--tls-verify", CA,
            "-H", f"Authorization: Bearer {token}",
            "--workers", os.environ.get("FUZZ_WORKERS", "2"),
            "--report", "junit", "--report-dir", REPORT_DIR,
            "--suppress-health-check", "all", "--no-color", *filters,
        ]
        # A fixed seed: a failure found in CI is the same failure found again here.
        command += ["--seed", os.environ.get("FUZZ_SEED", "20261202")]
        env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks",
                   PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
        if subprocess.run(command, env=env).returncode != 0:
            failed.append(name)
    if failed:
        sys.exit(f"schemathesis found problems in: {', '.join(failed)}")


CONFIG = """
# Written by scripts/api_fuzz.py for one run.
[generation]
max-examples = {max_examples}

[checks.positive_data_acceptance]
# 2xx, or a refusal about who calls or what exists; and 422 for the rules a schema cannot state
# (a Luhn check digit, a date of birth in the past, a booking window, an SSN area never issued).
# The schemas are the parsers' rules or looser, never stricter (crates/api/src/docs.rs).
# And 415 for an upload whose bytes are not an allowed file type: the type is judged by the
# content, which no schema can state.
expected-statuses = ["2xx", "401", "403", "404", "409", "410", "412", "415", "422", "428", "429"]

[[operations]]
# An upload's parts come in order, `category` then `file` (the file is streamed and encrypted as
# it arrives), which OpenAPI's multipart encoding cannot state: the other order is 400
# invalid_multipart. Only this operation may answer 400 to a well-formed body.
include-name = "POST /api/patients/{{id}}/files"

[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "410", "413", "415", "422", "429"]

[phases.stateful.inference]
# The links are the document's own (crates/api/src/docs.rs). Inference from URLs seen in bodies
# (audit events name request paths) is off: schemathesis 4.32 builds such links with another
# route's parameters (`format` of /api/audit/export/{{format}} on /api/patients/{{id}}/export) and
# then refuses its own links.
algorithms = ["dependency-analysis"]

[checks.missing_required_header]
# A missing If-Match is 428 Precondition Required (RFC 6585).
expected-statuses = ["400", "401", "403", "406", "428"]
"""


if __name__ == "__main__":
    main()
