# Shared helpers for scripts/dev and scripts/test. Sourced, not run.
# shellcheck shell=bash

die() { echo "error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed ($2)"
}

# The directory holding initdb/pg_ctl: on PATH, or the newest /usr/lib/postgresql/*/bin.
# As root with apt available, installs Debian's postgresql package if none is found.
pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"; return
  fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "PostgreSQL server binaries not found; installing Debian's postgresql package"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 \
      || die "could not install PostgreSQL (apt-get install postgresql)"
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  fi
  [ -n "$dir" ] && [ -x "$dir/initdb" ] || die "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin"
  echo "$dir"
}

# Runs a PostgreSQL binary as the unprivileged 'postgres' user when we are root
# (postgres refuses to run as root), directly otherwise.
as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres \
      || die "running as root needs a 'postgres' user to run the cluster"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pg_prepare_dirs DATA SOCKET: create the directories, owned by the cluster's user.
pg_prepare_dirs() {
  mkdir -p "$1" "$2"
  chmod 700 "$1"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$1" "$2"
    runuser -u postgres -- test -w "$1" \
      || die "the 'postgres' user cannot reach $1: make its parent directories traversable (chmod o+x)"
  fi
}

# pg_start BINDIR DATA SOCKET PORT EXTRA_OPTS: initdb on first use, then start on loopback.
pg_start() {
  local bindir=$1 data=$2 sock=$3 port=$4 extra=$5
  pg_prepare_dirs "$data" "$sock"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg_user "$bindir/initdb" -D "$data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null \
      || die "initdb failed for $data"
  fi
  as_pg_user "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$sock $extra" >/dev/null \
    || { cat "$data/server.log" >&2 || true; die "PostgreSQL did not start (log above)"; }
}

pg_stop() {
  local bindir=$1 data=$2
  [ -f "$data/postmaster.pid" ] || return 0
  # A fast shutdown waits for WAL archiving; if that cannot finish (an unreachable
  # repository), stop immediately rather than leave a server running.
  as_pg_user "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 \
    || as_pg_user "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
}

# cargo_tool NAME VERSION [BIN [INSTALL_ARGS...]]: the path of a cargo-installed tool's binary
# BIN (default NAME), pinned and installed once into the project's own .tools/NAME-VERSION with
# --locked (minutes on 2 cores: only a machine's first run pays). INSTALL_ARGS pick features.
cargo_tool() {
  local name=$1 version=$2 bin=${3:-$1} root
  shift $(($# < 3 ? $# : 3))
  root=$PWD/.tools/$name-$version
  if [ ! -x "$root/bin/$bin" ]; then
    note "installing $name $version into $root (once; takes minutes)"
    cargo install --locked --quiet "$name@$version" --root "$root" "$@" >&2 \
      || die "could not install $name $version with cargo install"
  fi
  echo "$root/bin/$bin"
}

# The pinned sqlx-cli (Postgres only, rustls), matching the workspace's sqlx.
sqlx_cli() {
  cargo_tool sqlx-cli 0.9.0 cargo-sqlx --no-default-features --features postgres,rustls
}

# sqlx_prepare SERVER_URL [--check]: migrates a fresh database on the server at SERVER_URL
# (postgres://.../postgres) and writes the checked macros' offline data to .sqlx/ (with
# --check: fails if the committed data is stale instead). Every target of every crate, so the
# queries in tests and benches are covered too.
sqlx_prepare() {
  local server=$1 mode=${2:-} url
  # `prepare` must run as the cargo subcommand: put the pinned cargo-sqlx first on PATH.
  PATH="$(dirname "$(sqlx_cli)"):$PATH"
  url="${server%/*}/clinicd_sqlx_prepare"
  DATABASE_URL=$url cargo sqlx database drop -y >/dev/null 2>&1 || true
  DATABASE_URL=$url cargo sqlx database create || die "could not create $url"
  DATABASE_URL=$url cargo sqlx migrate run --source migrations >/dev/null || die "migrations failed on $url"
  if [ "$mode" = --check ]; then
    DATABASE_URL=$url cargo sqlx prepare --workspace --check -- --all-targets \
      || die "the offline query data in .sqlx/ is stale: run ./scripts/sqlx-prepare and commit .sqlx/"
  else
    DATABASE_URL=$url cargo sqlx prepare --workspace -- --all-targets || die "cargo sqlx prepare failed"
  fi
}

# The pgBackRest binary (the backup engine, docs/backup.md): on PATH, or Debian's package
# installed once when we are root with apt.
pgbackrest_bin() {
  if ! command -v pgbackrest >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "installing Debian's pgbackrest package"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >&2 \
      || die "could not install pgBackRest (apt-get install pgbackrest)"
  fi
  command -v pgbackrest || die "pgBackRest is required (apt-get install pgbackrest)"
}

# promtool (checks and unit-tests the shipped Prometheus rules): on PATH, or Debian's
# prometheus package installed once when we are root with apt.
promtool_bin() {
  if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "installing Debian's prometheus package (for promtool)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2 \
      || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2; }; } \
      || die "could not install promtool (apt-get install prometheus)"
  fi
  command -v promtool || die "promtool is required to check deploy/prometheus (apt-get install prometheus)"
}

# nginx (a TLS front for moto in the backup drill: pgBackRest 2.45 reaches S3 over HTTPS
# only): on PATH, or Debian's nginx-light installed once when we are root with apt.
nginx_bin() {
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    note "installing Debian's nginx-light package"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 \
      || die "could not install nginx (apt-get install nginx-light)"
  fi
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } \
    || die "nginx is required for the S3 backup drill (apt-get install nginx-light)"
}
