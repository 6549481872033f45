"""A small HTTPS client for clinicd's API, shared by the scripts that drive a running server
(api_fuzz.py, chaos.py): JSON calls, TOTP codes, and a clinic's first-day set-up (an
administrator's first login, a clinician with roles approved under dual control)."""

import base64
import hashlib
import hmac
import json
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

PASSWORD = "fuzzing is how we find the cracks 42"  # pragma: allowlist secret (throwaway test accounts)


class Client:
    def __init__(self, base, ca):
        self.base = base
        self.context = ssl.create_default_context(cafile=ca)

    def call(self, method, path, body=None, token=None, expect=(200,)):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        if status not in expect:
            sys.exit(f"setup: {method} {path} answered {status}: {text}")
        return json.loads(text) if text else None

    def first_login(self, username, one_time_password):
        """One-time password changed, TOTP enrolled: returns the account's second factor."""
        tokens = self.call("POST", "/api/auth/login",
                           {"username": username, "password": one_time_password})
        token = tokens["access_token"]
        self.call("POST", "/api/auth/password",
                  {"current_password": one_time_password, "new_password": PASSWORD}, token, (204,))
        enrolment = self.call("POST", "/api/auth/mfa/totp", None, token)
        factor = Factor(enrolment["secret"])
        confirmed = self.call("POST", "/api/auth/mfa/totp/confirm",
                              {"code": factor.code()}, token)
        factor.backup_codes = list(confirmed["backup_codes"])
        return factor

    def login(self, username, factor):
        """A fresh session (password, then the second factor): its access token."""
        answer = self.call("POST", "/api/auth/login", {"username": username, "password": PASSWORD},
                           expect=(200, 202))
        if "challenge_token" in answer:
            answer = self.call("POST", "/api/auth/mfa", {"challenge_token": answer["challenge_token"],
                                                         "code": factor.code()})
        return answer["access_token"]

    def user_with_roles(self, admin, clinicd, username, roles):
        """An account with `roles` (approved by the operator, as dual control asks), its first
        login done: returns its second factor."""
        created = self.call("POST", "/api/admin/users", {
            "username": username, "email": f"{username}@clinic.example",
            "display_name": username.replace(".", " ").title(), "roles": []}, admin, (201,))
        user_id, one_time = created["user"]["id"], created["one_time_password"]
        if roles:
            answer = self.call("PUT", f"/api/admin/users/{user_id}/roles", {"roles": roles},
                               admin, (200, 202))
            # 200 is the account (it has a username); 202 a proposal for a second person.
            if "username" not in answer:
                subprocess.run([clinicd, "admin", "approve", answer["id"]], check=True,
                               stdout=subprocess.DEVNULL)
        return self.first_login(username, one_time)


class Factor:
    """An account's second factor: its TOTP secret, the time steps used (each is accepted once)
    and its unused backup codes, spent first so that several logins need not wait for new
    30-second steps."""

    def __init__(self, secret):
        self.secret = secret
        self.used = set()
        self.backup_codes = []

    def code(self):
        if self.backup_codes:
            return self.backup_codes.pop()
        return fresh_code(self.secret, self.used)


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
