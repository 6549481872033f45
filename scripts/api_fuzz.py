#!/usr/bin/env python3
"""Sets up a running clinicd for schema-driven fuzzing, then runs schemathesis over every operation.

Called by scripts/api-fuzz with the server already listening. It does what a clinic's first day
does, through the API and the command line: the first administrator changes the one-time
password and enrols TOTP; a clinician is created, given the Provider and Staff roles (dual control: the
operator approves with `clinicd admin approve`), changes the password, enrols TOTP and registers
a patient. Then schemathesis runs every check against every operation, each with the token of
the person who would call it (administrators for admin, audit and keys; the clinician for the
rest), in passes ordered so that no operation ends a session another pass still needs.

Usage: api_fuzz.py BASE_URL CA_CERT CLINICD_BIN ADMIN_USERNAME ADMIN_OTP SCHEMATHESIS REPORT_DIR
Environment: FUZZ_MAX_EXAMPLES (per operation, default 25), FUZZ_SEED (default 20261202), FUZZ_PHASES
(default examples,coverage,fuzzing), FUZZ_WORKERS (default 2).
"""

import base64
import hashlib
import hmac
import json
import os
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

BASE, CA, CLINICD, ADMIN, ADMIN_OTP, SCHEMATHESIS, REPORT_DIR = sys.argv[1:8]
CONTEXT = ssl.create_default_context(cafile=CA)
PASSWORD = "fuzzing is how we find the cracks 42"


def call(method, path, body=None, token=None, expect=(200,)):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=CONTEXT, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    if status not in expect:
        sys.exit(f"setup: {method} {path} answered {status}: {text}")
    return json.loads(text) if text else None


def totp(secret, offset=0):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int(time.time()) // 30 + offset
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    start = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[start:start + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def fresh_code(secret, used):
    """A code for a time step not used yet (each step is accepted once)."""
    while True:
        code = totp(secret)
        if code not in used:
            used.add(code)
            return code
        time.sleep(1)


def first_login(username, one_time_password):
    """One-time password changed, TOTP enrolled: returns (secret, used codes)."""
    tokens = call("POST", "/api/auth/login", {"username": username, "password": one_time_password})
    token = tokens["access_token"]
    call("POST", "/api/auth/password",
         {"current_password": one_time_password, "new_password": PASSWORD}, token, (204,))
    enrolment = call("POST", "/api/auth/mfa/totp", None, token)
    used = set()
    call("POST", "/api/auth/mfa/totp/confirm",
         {"code": fresh_code(enrolment["secret"], used)}, token)
    return enrolment["secret"], used


def login(username, secret, used):
    """A fresh session (password, then the second factor): its access token."""
    answer = call("POST", "/api/auth/login", {"username": username, "password": PASSWORD},
                  expect=(200, 202))
    if "challenge_token" in answer:
        answer = call("POST", "/api/auth/mfa", {"challenge_token": answer["challenge_token"],
                                                "code": fresh_code(secret, used)})
    return answer["access_token"]


def main():
    admin_secret, admin_used = first_login(ADMIN, ADMIN_OTP)
    admin = login(ADMIN, admin_secret, admin_used)

    created = call("POST", "/api/admin/users", {
        "username": "fuzz.clinician", "email": "fuzz.clinician@clinic.example",
        "display_name": "Fuzz Clinician", "roles": []}, admin, (201,))
    clinician_id, clinician_otp = created["user"]["id"], created["one_time_password"]
    proposal = call("PUT", f"/api/admin/users/{clinician_id}/roles",
                    {"roles": ["Provider", "Staff"]}, admin, (202,))
    subprocess.run([CLINICD, "admin", "approve", proposal["id"]], check=True,
                   stdout=subprocess.DEVNULL)
    clinician_secret, clinician_used = first_login("fuzz.clinician", clinician_otp)
    clinician = login("fuzz.clinician", clinician_secret, clinician_used)
    call("POST", "/api/patients", {
        "given_name": "Fuzz", "family_name": "Patient", "date_of_birth": "1980-04-02",
        "sex": "female"}, clinician, (201,))
    # Logout ends the session it is called with: it gets one of its own.
    sacrificial = login("fuzz.clinician", clinician_secret, clinician_used)

    admin_sacrificial = login(ADMIN, admin_secret, admin_used)
    os.makedirs(REPORT_DIR, exist_ok=True)
    config_path = os.path.join(REPORT_DIR, "schemathesis.toml")
    with open(config_path, "w") as out:
        out.write(CONFIG.format(max_examples=os.environ.get("FUZZ_MAX_EXAMPLES", "25")))
    # Passes in this order: an administrator's operations can disable or reset the clinician
    # (the fuzzer reuses ids it has seen), and revoking sessions or logging out ends the
    # session used, so those come last, each with a session of its own.
    admin_paths = "^/api/(admin|audit|security)"
    own_endings = "^/api/auth/(logout|sessions/[^/]+)$"
    admin_endings = "^/api/admin/users/[^/]+/revoke-sessions$"
    ending = f"{own_endings}|{admin_endings}"
    passes = [
        ("clinician", clinician, ["--exclude-path-regex", f"{admin_paths}|{ending}"]),
        ("administrator", admin, ["--include-path-regex", admin_paths,
                                  "--exclude-path-regex", ending]),
        ("session endings (clinician)", sacrificial, ["--include-path-regex", own_endings]),
        ("session endings (administrator)", admin_sacrificial,
         ["--include-path-regex", admin_endings]),
    ]
    failed = []
    for name, token, filters in passes:
        print(f"==> schemathesis: {name}", file=sys.stderr, flush=True)
        command = [
            SCHEMATHESIS, "--config-file", config_path, "run", f"{BASE}/api/openapi.json",
            "--url", BASE, "--checks", "all", "--tls-verify", CA,
            "-H", f"Authorization: Bearer {token}",
            "--phases", os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing"),
            "--workers", os.environ.get("FUZZ_WORKERS", "2"),
            "--report", "junit", "--report-dir", REPORT_DIR,
            "--suppress-health-check", "all", "--no-color", *filters,
        ]
        # A fixed seed: a failure found in CI is the same failure found again here.
        command += ["--seed", os.environ.get("FUZZ_SEED", "20261202")]
        if subprocess.run(command).returncode != 0:
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

[checks.missing_required_header]
# A missing If-Match is 428 Precondition Required (RFC 6585).
expected-statuses = ["400", "401", "403", "406", "428"]
"""


if __name__ == "__main__":
    main()
