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
  as_pg_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

# cargo_tool NAME VERSION: the path of a cargo-installed tool, pinned and installed once into
# the project's own .tools/NAME-VERSION with --locked (minutes on 2 cores: only a machine's first
# run pays).
cargo_tool() {
  local name=$1 version=$2 root
  root=$PWD/.tools/$name-$version
  if [ ! -x "$root/bin/$name" ]; then
    note "installing $name $version into $root (once; takes minutes)"
    cargo install --locked --quiet "$name@$version" --root "$root" >&2 \
      || die "could not install $name $version with cargo install"
  fi
  echo "$root/bin/$name"
}
