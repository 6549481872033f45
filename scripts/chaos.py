#!/usr/bin/env python3
"""Whole-system fault injection under load, counted Jepsen-style (docs/assurance.md).

Called by scripts/chaos, which has started PostgreSQL (fsync on), moto (S3 and KMS) and a small
tmpfs, migrated the database and created the first administrator. This script:

- runs two clinicd instances on the one database, as a clinic group would: A stores files in S3,
  B on the local disk (the tmpfs); both take their root key from KMS. S3 and KMS are reached
  through a TCP proxy here, so they can be made unreachable;
- keeps a fixed-rate mixed load on both (patient reads, searches, note writes, registrations,
  uploads and downloads), recording every acknowledged write and every PHI response;
- injects faults in turn, at random moments and for random lengths (a fixed seed): PostgreSQL
  stopped with `pg_ctl -m immediate` and started again, an instance killed with SIGKILL and
  restarted a second later (as systemd's Restart=always would), S3 and KMS unreachable, and the
  disk under B's file store filled; after each it measures how long the system takes to serve
  again, without anyone touching clinicd;
- then counts: acknowledged writes lost, PHI responses without a committed audit event, objects
  without rows and rows without objects, plaintext on disk, in the bucket or in the logs, and
  whether the audit chain verifies. Any non-zero count, a broken chain or a recovery slower than
  the bound fails the run.

Usage: chaos.py (settings in the environment; scripts/chaos sets them)
"""

import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid

from api_client import Client

ENV = os.environ
TMP = ENV["CHAOS_TMP"]
CLINICD = ENV["CHAOS_CLINICD"]
FAULTS = int(ENV.get("CHAOS_FAULTS", "60"))
RATE = float(ENV.get("CHAOS_RATE", "20"))
SEED = int(ENV.get("CHAOS_SEED", "20261204"))
RECOVERY_BOUND = float(ENV.get("CHAOS_RECOVERY_BOUND_SECS", "60"))
REPORT = ENV["CHAOS_REPORT"]
# `faults` (the chaos run) or `soak` (the same load and counts, no faults, for SOAK_SECONDS,
# sampled every SOAK_WINDOW_SECONDS: scripts/soak).
MODE = ENV.get("CHAOS_MODE", "faults")
SOAK_SECONDS = float(ENV.get("SOAK_SECONDS", "1800"))
SOAK_WINDOW = float(ENV.get("SOAK_WINDOW_SECONDS", "60"))
STORE = ENV["CHAOS_STORE"]  # instance B's file store: a tmpfs
MOTO = ENV["CHAOS_MOTO_URL"]
BUCKET = ENV["CHAOS_BUCKET"]
PYTHON_AWS = ENV["CHAOS_AWS_PYTHON"]  # a python with boto3 (moto's venv)
# Family names, note bodies and file contents carry this marker: finding it anywhere at rest is
# plaintext PHI on disk.
MARKER = "Xqzchaosphi"
RANDOM = random.Random(SEED)


def log(message):
    print(f"==> chaos: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the proxy to S3 and KMS


class Proxy:
    """TCP forwarding to moto that can be cut: while down, new connections are closed at once
    and open ones are broken (what a network partition or an outage of the provider looks like
    to the SDK)."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.down = False
        self.lock = threading.Lock()
        self.open = set()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            client, _ = self.listener.accept()
            if self.down:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with self.lock:
                    self.open.discard(s)
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        self.down = True
        with self.lock:
            sockets = list(self.open)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self):
        self.down = False


# ---------------------------------------------------------------- the instances


class Instance:
    """One clinicd, restarted a second after it dies (systemd's Restart=always, RestartSec=1)."""

    def __init__(self, name, env):
        self.name = name
        self.env = env
        self.port = int(env["CLINICD_LISTEN_ADDR"].rsplit(":", 1)[1])
        self.metrics_port = int(env["CLINICD_METRICS_ADDR"].rsplit(":", 1)[1])
        self.base = f"https://localhost:{self.port}"
        self.process = None
        self.killed = 0
        self.unexpected_exits = 0
        self.log = open(os.path.join(TMP, f"server-{name}.log"), "ab")

    def start(self):
        self.process = subprocess.Popen([CLINICD, "serve"], env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def supervise(self):
        if self.process.poll() is not None:
            if self.process.returncode != -9:
                self.unexpected_exits += 1
                log(f"instance {self.name} exited by itself ({self.process.returncode}); restarting")
            time.sleep(1)
            self.start()

    def kill(self):
        self.killed += 1
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


_TLS = []
_CONNECTIONS = threading.local()


def tls_context():
    if not _TLS:
        _TLS.append(ssl.create_default_context(cafile=os.path.join(TMP, "data", "tls", "cert.pem")))
    return _TLS[0]


def _connection(instance, timeout):
    """This thread's kept-alive connection to `instance` (a clinic's frontend keeps its
    connections too: a handshake per request would measure the client, not the server), and
    whether it was reused."""
    pool = _CONNECTIONS.__dict__.setdefault("pool", {})
    connection = pool.get(instance.name)
    if connection is not None and connection.sock is not None:
        connection.sock.settimeout(timeout)
        return connection, True
    connection = http.client.HTTPSConnection("localhost", instance.port, context=tls_context(),
                                             timeout=timeout)
    pool[instance.name] = connection
    return connection, False


def _drop(instance):
    connection = _CONNECTIONS.__dict__.get("pool", {}).pop(instance.name, None)
    if connection is not None:
        connection.close()


# A kept-alive connection the server has since closed (idle timeout, restart) fails before the
# request reaches it: that one is retried once on a fresh connection, as HTTP clients do.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def request(instance, method, path, token, body=None, content_type=None, timeout=10):
    """(status, body bytes, request id) or (None, error text, request id) on a transport error."""
    request_id = str(uuid.uuid4())
    headers = {"authorization": f"Bearer {token}", "x-request-id": request_id}
    if body is not None:
        headers["content-type"] = content_type or "application/json"
    for attempt in (1, 2):
        connection, reused = _connection(instance, timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.will_close:
                _drop(instance)
            return response.status, data, response.getheader("x-request-id") or request_id
        except (OSError, http.client.HTTPException) as error:
            _drop(instance)
            if reused and attempt == 1 and isinstance(error, _STALE):
                continue
            return None, str(error).encode(), request_id
    return None, b"unreachable", request_id


# ---------------------------------------------------------------- the load


class Load:
    """A fixed rate of mixed operations, spread over both instances. Proportions: a clinic reads
    far more than it writes (reads 40%, searches 10%, notes 20%, registrations 10%, uploads
    10%, downloads 10%)."""

    MIX = [("read", 40), ("search", 10), ("note", 20), ("register", 10), ("upload", 10),
           ("download", 10)]

    def __init__(self, instances, token, seed_patient):
        self.instances = instances
        self.token = token
        self.lock = threading.Lock()
        self.patients = {seed_patient: "seed"}  # acknowledged registrations: id -> family name
        self.notes = {}  # id -> sha256 of the body
        self.files = {}  # id -> (instance name, sha256 of the content)
        self.phi = []  # request ids of PHI responses served (2xx)
        self.statuses = {}
        self.errors = 0  # answers other than 2xx (and transport errors)
        self.timings = []  # (started, operation, seconds): the soak's latency windows
        self.stop = threading.Event()
        self.random = random.Random(SEED + 1)
        self.choices = [name for name, weight in self.MIX for _ in range(weight)]

    def count(self, operation, status):
        key = f"{operation} {status if status is not None else 'transport error'}"
        with self.lock:
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if status is None or not 200 <= status < 300:
                self.errors += 1

    def run(self, workers=8):
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(workers)]
        self.queue = []
        self.ready = threading.Semaphore(0)
        for t in threads:
            t.start()
        interval = 1.0 / RATE
        next_at = time.monotonic()
        while not self.stop.is_set():
            with self.lock:
                self.queue.append(self.random.choice(self.choices))
            self.ready.release()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        for _ in threads:
            self.ready.release()
        for t in threads:
            t.join(timeout=30)

    def worker(self):
        while True:
            self.ready.acquire()
            with self.lock:
                if not self.queue:
                    return
                operation = self.queue.pop(0)
            started = time.monotonic()
            getattr(self, operation)()
            with self.lock:
                self.timings.append((started, operation, time.monotonic() - started))

    def pick_patient(self):
        with self.lock:
            return self.random.choice(list(self.patients))

    def served_phi(self, operation, status, request_id):
        self.count(operation, status)
        if status is not None and 200 <= status < 300:
            with self.lock:
                self.phi.append(request_id)

    def read(self):
        instance = self.random.choice(self.instances)
        status, _, rid = request(instance, "GET", f"/api/patients/{self.pick_patient()}", self.token)
        self.served_phi("read", status, rid)

    def search(self):
        instance = self.random.choice(self.instances)
        with self.lock:
            family = self.patients[self.random.choice(list(self.patients))]
        if family == "seed":
            family, born = f"{MARKER}seed", "1970-01-01"
        else:
            born = "1971-03-04"
        body = json.dumps({"family_name": family, "date_of_birth": born}).encode()
        status, _, rid = request(instance, "POST", "/api/patients/search", self.token, body)
        self.served_phi("search", status, rid)

    def register(self, instance=None):
        instance = instance or self.random.choice(self.instances)
        family = f"{MARKER}{''.join(self.random.choice('abcdefghij') for _ in range(8))}"
        body = json.dumps({"given_name": "Chaos", "family_name": family,
                           "date_of_birth": "1971-03-04", "sex": "female"}).encode()
        status, data, _ = request(instance, "POST", "/api/patients", self.token, body)
        self.count("register", status)
        if status == 201:
            with self.lock:
                self.patients[json.loads(data)["id"]] = family
        return status

    def note(self):
        instance = self.random.choice(self.instances)
        text = f"Seen today. {MARKER} note {uuid.uuid4()}."
        body = json.dumps({"encounter_date": "2026-12-01", "body": text}).encode()
        status, data, _ = request(instance, "POST", f"/api/patients/{self.pick_patient()}/notes",
                                  self.token, body)
        self.count("note", status)
        if status == 201:
            with self.lock:
                self.notes[json.loads(data)["id"]] = hashlib.sha256(text.encode()).hexdigest()

    def upload(self, instance=None):
        instance = instance or self.random.choice(self.instances)
        content = (f"Referral letter. {MARKER} {uuid.uuid4()}\n" * self.random.randint(20, 400)).encode()
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"category\"\r\n\r\nreferral\r\n"
                f"--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"letter.txt\"\r\n"
                f"content-type: text/plain\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        status, data, _ = request(instance, "POST", f"/api/patients/{self.pick_patient()}/files",
                                  self.token, body, f"multipart/form-data; boundary={boundary}",
                                  timeout=30)
        self.count("upload", status)
        if status == 201:
            with self.lock:
                self.files[json.loads(data)["id"]] = (instance.name, hashlib.sha256(content).hexdigest())
        return status

    def download(self):
        with self.lock:
            if not self.files:
                return
            file_id = self.random.choice(list(self.files))
            name, _ = self.files[file_id]
        instance = next(i for i in self.instances if i.name == name)
        status, _, rid = request(instance, "GET", f"/api/files/{file_id}", self.token, timeout=30)
        self.served_phi("download", status, rid)


# ---------------------------------------------------------------- faults


def pg(action):
    subprocess.run(["bash", "-c", f'. scripts/lib.sh; as_pg_user "$CHAOS_PG_BIN/pg_ctl" -D "$CHAOS_PG_DATA" {action}'],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fill_disk():
    """Fills the tmpfs under B's file store; returns the filler's path."""
    path = os.path.join(STORE, "filler")
    # Unbuffered: a buffered file would raise ENOSPC again when it is closed.
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
    return path


def probe_instance(instance, token, patient):
    """The instance is ready and serves an audited read."""
    try:
        status, _, _ = request(instance, "GET", "/ready", token, timeout=3)
        if status != 200:
            return False
        status, _, _ = request(instance, "GET", f"/api/patients/{patient}", token, timeout=5)
        return status == 200
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False


def wait_until(check, bound):
    """Seconds until check() held, or None if it did not within bound."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


class Faults:
    KINDS = ["postgres_immediate_stop", "clinicd_sigkill", "s3_kms_unreachable", "disk_full"]

    def __init__(self, instances, proxy, load, token, patient):
        self.instances = instances
        self.proxy = proxy
        self.load = load
        self.token = token
        self.patient = patient
        self.results = []

    def run(self, count):
        plan = []
        while len(plan) < count:
            kinds = list(self.KINDS)
            RANDOM.shuffle(kinds)
            plan.extend(kinds)
        for number, kind in enumerate(plan[:count], 1):
            time.sleep(RANDOM.uniform(0.5, 2.5))  # a random moment in the load
            hold = RANDOM.uniform(0.5, 3.0)
            result = getattr(self, kind)(hold)
            result.update(number=number, kind=kind, held_seconds=round(hold, 2))
            self.results.append(result)
            took = result["recovery_seconds"]
            log(f"fault {number}/{count}: {kind} {result.get('target', '')} held {hold:.1f} s, "
                f"recovered in {'NOT RECOVERED' if took is None else f'{took:.2f} s'}")

    def all_serve(self):
        return all(probe_instance(i, self.token, self.patient) for i in self.instances)

    def postgres_immediate_stop(self, hold):
        pg("-m immediate -w stop")
        time.sleep(hold)
        pg('-w -t 60 -l "$CHAOS_PG_DATA/server.log" start -o "$CHAOS_PG_OPTS"')
        return {"recovery_seconds": wait_until(self.all_serve, RECOVERY_BOUND)}

    def clinicd_sigkill(self, hold):
        instance = RANDOM.choice(self.instances)
        instance.kill()
        # The supervisor restarts it a second later; measured from the kill.
        start = time.monotonic()
        took = wait_until(lambda: probe_instance(instance, self.token, self.patient), RECOVERY_BOUND)
        return {"target": instance.name,
                "recovery_seconds": None if took is None else time.monotonic() - start}

    def s3_kms_unreachable(self, hold):
        self.proxy.cut()
        time.sleep(hold)
        self.proxy.restore()
        a = self.instances[0]
        took = wait_until(lambda: self.load.upload(a) == 201, RECOVERY_BOUND)
        return {"target": a.name, "recovery_seconds": took}

    def disk_full(self, hold):
        filler = fill_disk()
        time.sleep(hold)
        os.remove(filler)
        b = self.instances[1]
        took = wait_until(lambda: self.load.upload(b) == 201, RECOVERY_BOUND)
        return {"target": b.name, "recovery_seconds": took}


# ---------------------------------------------------------------- the soak


def rss_kib(instance):
    """The instance's resident set (KiB), from /proc."""
    try:
        with open(f"/proc/{instance.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def pool_gauges(instance):
    """The instance's database pool at this moment, from its /metrics."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", instance.metrics_port, timeout=3)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
    except (OSError, http.client.HTTPException):
        return None
    # The shared pool, then the HTTPS workers' own pools (summed over the workers).
    names = {f"clinicd_db_{pool}_{gauge}": f"{prefix}{gauge}"
             for pool, prefix in (("pool", ""), ("worker_pool", "worker_"))
             for gauge in ("connections", "idle_connections", "max_connections")}
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            values[names[name]] = int(float(value))
    for prefix in ("", "worker_"):
        if f"{prefix}connections" in values and f"{prefix}idle_connections" in values:
            values[f"{prefix}in_use"] = (values[f"{prefix}connections"]
                                         - values[f"{prefix}idle_connections"])
    return values


def audit_table():
    """The audit trail's size and dead rows over all its partitions: it is append-only, so it
    should never bloat."""
    row = psql("SELECT coalesce(sum(pg_total_relation_size(relid)), 0), "
               "coalesce(sum(n_live_tup), 0), coalesce(sum(n_dead_tup), 0) "
               "FROM pg_stat_user_tables WHERE relid = 'audit_events'::regclass "
               "OR relid IN (SELECT inhrelid FROM pg_inherits "
               "WHERE inhparent = 'audit_events'::regclass)")
    size, live, dead = (int(v) for v in row.split("|"))
    return {"total_bytes": size, "live_rows": live, "dead_rows": dead}


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else None


def soak(instances, load, seconds, window):
    """Samples the steady load every `window` seconds: latency, errors, memory, pool, audit."""
    windows = []
    started = time.monotonic()
    errors_before = 0
    while time.monotonic() - started < seconds:
        window_start = time.monotonic()
        time.sleep(min(window, max(0.0, seconds - (window_start - started))))
        now = time.monotonic()
        with load.lock:
            timings = [t for t in load.timings if window_start <= t[0] < now]
            errors = load.errors
        latencies = [t[2] * 1000 for t in timings]
        reads = [t[2] * 1000 for t in timings if t[1] == "read"]
        sample = {
            "at_seconds": round(now - started, 1),
            "operations": len(timings),
            "p50_ms": round(percentile(latencies, 0.5) or 0, 1),
            "p99_ms": round(percentile(latencies, 0.99) or 0, 1),
            "read_p99_ms": round(percentile(reads, 0.99) or 0, 1),
            "errors": errors - errors_before,
            "rss_kib": {i.name: rss_kib(i) for i in instances},
            "pool": {i.name: pool_gauges(i) for i in instances},
            "audit_events": audit_table(),
        }
        errors_before = errors
        windows.append(sample)
        log(f"soak {sample['at_seconds']:.0f} s: {sample['operations']} ops, p50 {sample['p50_ms']} ms, "
            f"p99 {sample['p99_ms']} ms, errors {sample['errors']}, RSS "
            f"{', '.join(f'{k} {v // 1024 if v else None} MiB' for k, v in sample['rss_kib'].items())}")
    return windows


def soak_verdict(windows, instances, pool_before):
    """The soak's own checks: no errors, memory that levels off, no more connections held after
    the load than before it (each instance keeps a few for good: its job queue's and its
    blocklist's LISTEN), an audit trail without dead rows. Memory is judged from the first
    window (after start-up and warm-up) to the last: at most 25% plus 16 MiB more."""
    problems = []
    if not windows:
        return ["the soak took no samples"], {}, audit_table()
    errors = sum(w["errors"] for w in windows)
    if errors:
        problems.append(f"soak: {errors} answers other than 2xx under a steady load")
    for instance in instances:
        first, last = windows[0]["rss_kib"][instance.name], windows[-1]["rss_kib"][instance.name]
        if first and last and last > first * 1.25 + 16 * 1024:
            problems.append(f"soak: instance {instance.name}'s memory grew from {first} to {last} KiB")
    # After the load has stopped, no connection may still be in use: a leak would hold one.
    time.sleep(2)
    after = {i.name: pool_gauges(i) for i in instances}
    for name, pool in after.items():
        held = [(key, (pool_before.get(name) or {}).get(key, 0)) for key in ("in_use", "worker_in_use")]
        if not pool or any(pool.get(key, before + 1) > before for key, before in held):
            problems.append(f"soak: instance {name}'s pool after the load: {pool} "
                            f"(before it: {pool_before.get(name)})")
    audit = audit_table()
    if audit["dead_rows"] > audit["live_rows"] // 100:
        problems.append(f"soak: the append-only audit trail has dead rows: {audit}")
    return problems, after, audit


# ---------------------------------------------------------------- the counts


def psql(sql, stdin=None):
    result = subprocess.run(["bash", "-c", '. scripts/lib.sh; "$CHAOS_PG_BIN/psql" "$DATABASE_URL" -XAtqc "$0"', sql],
                            input=stdin, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def missing_from(table, column, values):
    """How many of values are not in table.column (loaded with COPY: thousands of ids)."""
    if not values:
        return 0
    query = (f"SELECT count(*) FROM wanted w WHERE NOT EXISTS "
             f"(SELECT 1 FROM {table} t WHERE t.{column}::text = w.v)")
    result = subprocess.run(
        ["bash", "-c", '. scripts/lib.sh; "$CHAOS_PG_BIN/psql" "$DATABASE_URL" -XAtq '
         '-c "CREATE TEMP TABLE wanted (v text)" -c "COPY wanted FROM STDIN" -c "$0"', query],
        input="\n".join(values) + "\n", capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def bucket_objects():
    """{key: bytes} of every object in the bucket, and the multipart uploads left open."""
    code = f"""
import boto3, json, base64, sys
s3 = boto3.client("s3", endpoint_url="{MOTO}", region_name="us-east-1")
out = {{}}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="{BUCKET}"):
    for o in page.get("Contents", []):
        out[o["Key"]] = base64.b64encode(s3.get_object(Bucket="{BUCKET}", Key=o["Key"])["Body"].read()).decode()
uploads = s3.list_multipart_uploads(Bucket="{BUCKET}").get("Uploads", [])
json.dump({{"objects": out, "open_uploads": len(uploads)}}, sys.stdout)
"""
    result = subprocess.run([PYTHON_AWS, "-c", code], capture_output=True, text=True, check=True)
    answer = json.loads(result.stdout)
    return {k: base64.b64decode(v) for k, v in answer["objects"].items()}, answer["open_uploads"]


def files_on_disk(root):
    for directory, _, names in os.walk(root):
        for name in names:
            yield os.path.join(directory, name)


def holds_marker(path):
    try:
        with open(path, "rb") as f:
            return MARKER.lower().encode() in f.read().lower()
    except OSError:
        return False


def count(load, instances, token):
    report = {}
    # Acknowledged writes: every one is in the database, and every file reads back whole.
    patients = [p for p, family in load.patients.items() if family != "seed"]
    report["acknowledged_writes"] = {"patients": len(patients), "notes": len(load.notes),
                                     "files": len(load.files)}
    lost = missing_from("patients", "id", patients) + missing_from("clinical_notes", "id", list(load.notes))
    lost += missing_from("files", "id", list(load.files))
    by_name = {i.name: i for i in instances}
    unreadable = []
    for file_id, (name, digest) in load.files.items():
        status, data, _ = request(by_name[name], "GET", f"/api/files/{file_id}", token, timeout=30)
        if status != 200 or hashlib.sha256(data).hexdigest() != digest:
            unreadable.append({"file": file_id, "instance": name, "status": status,
                               "body": data[:200].decode(errors="replace") if status != 200 else "digest differs"})
    report["acknowledged_writes_lost"] = lost
    report["acknowledged_files_unreadable"] = len(unreadable)
    report["unreadable_samples"] = unreadable[:5]

    # Every PHI response served had its audit event committed (the event names the request).
    report["phi_responses"] = len(load.phi)
    report["phi_responses_without_audit_event"] = missing_from(
        "audit_events", "request_id", load.phi)

    # Orphans: rows whose object is gone, objects (or leftovers) no row names.
    keys = set(psql("SELECT object_key FROM files").split())
    objects, open_uploads = bucket_objects()
    bucket_files = {k for k in objects if k.startswith("files/")}
    disk_files = set()
    partial = 0
    # The local store keeps object `files/<id>` at `objects/files/<id>`, partial writes under
    # `.partial/`.
    for path in files_on_disk(STORE):
        relative = os.path.relpath(path, STORE)
        if relative.startswith(".partial/"):
            partial += 1
        elif relative.startswith("objects/"):
            disk_files.add(relative.removeprefix("objects/"))
    stored = bucket_files | disk_files
    report["rows_without_object"] = len(keys - stored)
    report["objects_without_row"] = len(stored - keys)
    report["orphan_samples"] = {"rows": sorted(keys - stored)[:3], "objects": sorted(stored - keys)[:3]}
    report["partial_writes_left"] = {"local_partial_files": partial, "s3_open_multipart_uploads": open_uploads}

    # Plaintext: the marker in anything at rest (the database's files and WAL, the file store,
    # the bucket) or in the servers' logs.
    plaintext = [p for p in files_on_disk(ENV["CHAOS_PG_DATA"]) if holds_marker(p)]
    plaintext += [p for p in files_on_disk(STORE) if holds_marker(p)]
    plaintext += [f"s3://{BUCKET}/{k}" for k, v in objects.items() if MARKER.lower().encode() in v.lower()]
    plaintext += [p for p in files_on_disk(TMP) if p.endswith(".log") and holds_marker(p)]
    report["plaintext_at_rest_or_in_logs"] = len(plaintext)
    report["plaintext_locations"] = plaintext[:10]

    verify = subprocess.run([CLINICD, "audit", "verify"], env=instances[0].env,
                            capture_output=True, text=True)
    report["audit_chain_verifies"] = verify.returncode == 0
    report["audit_verify_report"] = verify.stdout.strip()[-400:]
    return report


# ---------------------------------------------------------------- main


def main():
    proxy = Proxy(int(MOTO.rsplit(":", 1)[1]))
    base_env = dict(ENV)
    base_env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
    a_env = dict(base_env, CLINICD_LISTEN_ADDR=f"127.0.0.1:{ENV['CHAOS_PORT_A']}",
                 CLINICD_METRICS_ADDR=f"127.0.0.1:{ENV['CHAOS_METRICS_PORT_A']}",
                 CLINICD_STORAGE="s3", CLINICD_S3_BUCKET=BUCKET)
    b_env = dict(base_env, CLINICD_LISTEN_ADDR=f"127.0.0.1:{ENV['CHAOS_PORT_B']}",
                 CLINICD_METRICS_ADDR=f"127.0.0.1:{ENV['CHAOS_METRICS_PORT_B']}",
                 CLINICD_STORAGE="local", CLINICD_STORAGE_DIR=STORE)
    instances = [Instance("A", a_env), Instance("B", b_env)]
    instances[0].start()
    # B starts once A has made the development certificate both serve.
    ca = os.path.join(TMP, "data", "tls", "cert.pem")
    if wait_until(lambda: os.path.exists(ca) and probe_ready(instances[0]), 120) is None:
        sys.exit("instance A did not start (see its log)")
    instances[1].start()
    if wait_until(lambda: probe_ready(instances[1]), 120) is None:
        sys.exit("instance B did not start (see its log)")

    api = Client(instances[0].base, ca)
    admin_factor = api.first_login(ENV["CHAOS_ADMIN"], ENV["CHAOS_ADMIN_OTP"])
    admin = api.login(ENV["CHAOS_ADMIN"], admin_factor)
    factor = api.user_with_roles(admin, CLINICD, "chaos.clinician", ["Provider", "Staff"])
    token = api.login("chaos.clinician", factor)
    seed = api.call("POST", "/api/patients", {"given_name": "Chaos", "family_name": f"{MARKER}seed",
                                              "date_of_birth": "1970-01-01", "sex": "male"},
                    token, (201,))["id"]

    stop = threading.Event()

    def supervise():
        while not stop.is_set():
            for instance in instances:
                instance.supervise()
            time.sleep(0.1)

    threading.Thread(target=supervise, daemon=True).start()
    load = Load(instances, token, seed)
    # The pools at rest, before the load: the soak's yardstick for connections held after it.
    time.sleep(2 if MODE == "soak" else 0)
    pool_before = {i.name: pool_gauges(i) for i in instances}
    load_thread = threading.Thread(target=load.run, daemon=True)
    started = time.monotonic()
    load_thread.start()
    faults = Faults(instances, proxy, load, token, seed)
    failure = None
    windows = []
    if MODE == "soak":
        log(f"soak: a steady {RATE:g} operations/s on two instances for {SOAK_SECONDS:g} s")
        windows = soak(instances, load, SOAK_SECONDS, SOAK_WINDOW)
    else:
        log(f"load at {RATE:g} operations/s on two instances; {FAULTS} faults (seed {SEED})")
        try:
            faults.run(FAULTS)
        except Exception as error:  # noqa: BLE001 - reported, then the counts still run
            failure = f"{type(error).__name__}: {error}"
            log(f"the fault run stopped: {failure}")
        time.sleep(2)
    load.stop.set()
    load_thread.join(timeout=60)
    soak_problems = []
    if MODE == "soak":
        soak_problems, pool_after, audit_after = soak_verdict(windows, instances, pool_before)
    duration = time.monotonic() - started
    if wait_until(faults.all_serve, RECOVERY_BOUND) is None:
        failure = failure or "the instances did not serve after the last fault"
    log("counting")
    report = count(load, instances, token)
    stop.set()
    for instance in instances:
        instance.stop()

    recoveries = {}
    for kind in Faults.KINDS:
        times = sorted(r["recovery_seconds"] for r in faults.results
                       if r["kind"] == kind and r["recovery_seconds"] is not None)
        unrecovered = sum(1 for r in faults.results if r["kind"] == kind and r["recovery_seconds"] is None)
        recoveries[kind] = {
            "faults": sum(1 for r in faults.results if r["kind"] == kind),
            "not_recovered": unrecovered,
            "median_seconds": round(times[len(times) // 2], 2) if times else None,
            "max_seconds": round(times[-1], 2) if times else None,
        }
    report.update({
        "seed": SEED, "rate_per_second": RATE, "duration_seconds": round(duration, 1),
        "faults": len(faults.results), "recovery_bound_seconds": RECOVERY_BOUND,
        "recovery": recoveries,
        "instances": {i.name: {"sigkills": i.killed, "unexpected_exits": i.unexpected_exits}
                      for i in instances},
        "responses": dict(sorted(load.statuses.items())),
        "run_error": failure,
        "fault_log": faults.results,
    })
    if MODE == "soak":
        report.update({"mode": "soak", "windows": windows, "pool_before_load": pool_before, "pool_after_load": pool_after,
                       "audit_events_after": audit_after, "errors": load.errors})
    problems = list(soak_problems)
    if failure:
        problems.append(failure)
    if MODE != "soak" and len(faults.results) < FAULTS:
        problems.append(f"only {len(faults.results)} of {FAULTS} faults ran")
    for key in ("acknowledged_writes_lost", "acknowledged_files_unreadable",
                "phi_responses_without_audit_event", "rows_without_object",
                "objects_without_row", "plaintext_at_rest_or_in_logs"):
        if report[key]:
            problems.append(f"{key}: {report[key]}")
    if not report["audit_chain_verifies"]:
        problems.append("the audit chain does not verify")
    for kind, r in recoveries.items():
        if r["not_recovered"]:
            problems.append(f"{kind}: {r['not_recovered']} not recovered within {RECOVERY_BOUND:g} s")
    if report["phi_responses"] == 0 or sum(report["acknowledged_writes"].values()) == 0:
        problems.append("the load did nothing: the counts would prove nothing")
    report["problems"] = problems
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    for instance in instances:
        instance.log.close()
        shutil.copy(os.path.join(TMP, f"server-{instance.name}.log"),
                    os.path.join(os.path.dirname(REPORT), f"server-{instance.name}.log"))
    if MODE == "soak":
        first, last = windows[0] if windows else {}, windows[-1] if windows else {}
        report["summary"] = {"first_window": first, "last_window": last}
    with open(REPORT, "w") as out:
        json.dump(report, out, indent=2)
    summary = {k: report[k] for k in ("faults", "duration_seconds", "acknowledged_writes",
                                      "acknowledged_writes_lost", "acknowledged_files_unreadable",
                                      "phi_responses", "phi_responses_without_audit_event",
                                      "rows_without_object", "objects_without_row",
                                      "partial_writes_left", "plaintext_at_rest_or_in_logs",
                                      "audit_chain_verifies", "recovery", "instances")}
    if MODE == "soak":
        summary = {k: report[k] for k in ("mode", "duration_seconds", "acknowledged_writes",
                                          "acknowledged_writes_lost", "phi_responses",
                                          "phi_responses_without_audit_event", "errors",
                                          "pool_before_load", "pool_after_load", "audit_events_after",
                                          "summary")}
    print(json.dumps(summary, indent=2))
    log(f"report: {REPORT}")
    if problems:
        for problem in problems:
            print(f"FAIL {problem}", file=sys.stderr)
        sys.exit(1)
    log("passed")


def probe_ready(instance):
    try:
        connection = http.client.HTTPSConnection("localhost", instance.port, context=tls_context(), timeout=2)
        connection.request("GET", "/ready")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


if __name__ == "__main__":
    main()
