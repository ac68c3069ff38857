#!/usr/bin/env bash
# A throwaway MariaDB (MySQL-compatible) server on loopback, for ML Metadata tests.
#
#   scripts/mariadb.sh install            install Debian's mariadb-server if it is missing
#   scripts/mariadb.sh start DATADIR PORT install if needed, initialize DATADIR, start the server
#                                         on 127.0.0.1:PORT, create user loopline/loopline
#                                         (every right) and loopline_reader/loopline_reader
#                                         (SELECT only: what the registry's reads, `loopline
#                                         lineage` and the notebooks need)
#   scripts/mariadb.sh stop DATADIR       stop the server started on DATADIR
#   scripts/mariadb.sh wait-apt-lock      wait until no other process holds Debian's package locks
#
# Installing waits for Debian's package locks when another apt/dpkg run (unattended upgrades, a
# second test run) holds them, up to APT_LOCK_TIMEOUT seconds (default 600), then fails naming
# the holder; apt-get itself is also told to wait (DPkg::Lock::Timeout) for the moment between
# the check and its own lock. APT_LOCK_FILES (default: dpkg's and apt's lock files) lists the
# files to watch.
#
# The server runs from its own data directory with --no-defaults: it neither reads nor touches the
# system's MariaDB configuration, data or service. `start` prints the connection URL
# (mysql://loopline:loopline@127.0.0.1:PORT) on its last line. Idempotent: `install` does nothing
# when the server binary exists; `start` on a running DATADIR prints the URL again.
set -euo pipefail

USER_NAME=loopline
USER_PASSWORD=loopline
READER_NAME=loopline_reader
READER_PASSWORD=loopline_reader

APT_LOCK_TIMEOUT="${APT_LOCK_TIMEOUT:-600}"
APT_LOCK_FILES="${APT_LOCK_FILES:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock
  /var/lib/apt/lists/lock /var/cache/apt/archives/lock}"

die() { echo "mariadb.sh: $*" >&2; exit 1; }

lock_holders() {  # lock_holders FILE: "PID (COMMAND)" of each process that has FILE open
  local pid
  [ -e "$1" ] || return 0
  command -v fuser >/dev/null || return 0
  for pid in $(fuser "$1" 2>/dev/null); do
    echo "$pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200 | sed 's/ *$//'))"
  done
}

wait_for_apt_lock() {  # waits until no process has a package lock file open
  [[ "$APT_LOCK_TIMEOUT" =~ ^[0-9]+$ ]] \
    || die "APT_LOCK_TIMEOUT must be a number of seconds, got '$APT_LOCK_TIMEOUT'"
  local waited=0 lock holders said=""
  while :; do
    holders=""
    for lock in $APT_LOCK_FILES; do
      holders="$(lock_holders "$lock")"
      [ -z "$holders" ] || break
    done
    [ -n "$holders" ] || return 0
    if [ "$waited" -ge "$APT_LOCK_TIMEOUT" ]; then
      die "another package manager run still holds $lock after ${APT_LOCK_TIMEOUT}s:" \
          "$(echo $holders); let it finish (or stop it) and run again"
    fi
    if [ -z "$said" ]; then
      echo "mariadb.sh: waiting for $lock, held by $(echo $holders)" \
           "(up to ${APT_LOCK_TIMEOUT}s)" >&2
      said=1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

server_binary() {
  local candidate
  for candidate in mariadbd mysqld /usr/sbin/mariadbd /usr/sbin/mysqld; do
    if command -v "$candidate" >/dev/null 2>&1; then command -v "$candidate"; return 0; fi
  done
  return 1
}

install_server() {
  if server_binary >/dev/null; then return 0; fi
  command -v apt-get >/dev/null || die "mariadb-server is missing and there is no apt-get to install it"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "mariadb.sh: installing mariadb-server (apt-get)" >&2
  wait_for_apt_lock
  local wait="-o DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT"
  # Update the package lists only when installing without them fails (fresh machine).
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get $wait install -y -q --no-install-recommends \
      mariadb-server >&2; then
    wait_for_apt_lock
    $sudo apt-get $wait update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get $wait install -y -q --no-install-recommends \
      mariadb-server >&2
  fi
  server_binary >/dev/null || die "mariadb-server installed but no mariadbd/mysqld binary found"
}

client() {  # client DATADIR SQL: run SQL as root through the server's socket
  local bin
  bin="$(command -v mariadb || command -v mysql)" || die "no mariadb/mysql client binary"
  "$bin" --no-defaults --protocol=socket --socket="$1/mysqld.sock" -uroot -e "$2"
}

start_server() {
  local datadir="$1" port="$2"
  [[ "$port" =~ ^[0-9]+$ ]] || die "port must be a number, got '$port'"
  install_server
  mkdir -p "$datadir"
  datadir="$(cd "$datadir" && pwd)"
  local url="mysql://$USER_NAME:$USER_PASSWORD@127.0.0.1:$port"
  if [ -f "$datadir/mysqld.pid" ] && kill -0 "$(cat "$datadir/mysqld.pid")" 2>/dev/null; then
    echo "$url"; return 0
  fi
  local run_as
  run_as="$(id -un)"
  if [ ! -d "$datadir/mysql" ]; then
    local install_db
    install_db="$(command -v mariadb-install-db || command -v mysql_install_db)" \
      || die "no mariadb-install-db binary"
    "$install_db" --no-defaults --datadir="$datadir" --user="$run_as" \
      --auth-root-authentication-method=normal --skip-test-db >"$datadir/install.log" 2>&1 \
      || { cat "$datadir/install.log" >&2; die "could not initialize $datadir"; }
  fi
  "$(server_binary)" --no-defaults --datadir="$datadir" --user="$run_as" \
    --bind-address=127.0.0.1 --port="$port" --socket="$datadir/mysqld.sock" \
    --pid-file="$datadir/mysqld.pid" --log-error="$datadir/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=64M --max-connections=50 \
    >/dev/null 2>&1 &
  local i
  for i in $(seq 1 60); do
    if [ -S "$datadir/mysqld.sock" ] && client "$datadir" "SELECT 1" >/dev/null 2>&1; then
      client "$datadir" "CREATE USER IF NOT EXISTS '$USER_NAME'@'%' IDENTIFIED BY '$USER_PASSWORD';
                         GRANT ALL PRIVILEGES ON *.* TO '$USER_NAME'@'%';
                         CREATE USER IF NOT EXISTS '$READER_NAME'@'%' IDENTIFIED BY '$READER_PASSWORD';
                         GRANT SELECT ON *.* TO '$READER_NAME'@'%'; FLUSH PRIVILEGES;"
      echo "$url"
      return 0
    fi
    sleep 0.5
  done
  tail -20 "$datadir/error.log" >&2 || true
  die "server on $datadir did not come up on 127.0.0.1:$port within 30 s"
}

stop_server() {
  local datadir="$1" pid
  [ -f "$datadir/mysqld.pid" ] || return 0
  pid="$(cat "$datadir/mysqld.pid")"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  die "server $pid on $datadir did not stop within 30 s"
}

case "${1:-}" in
  install) install_server ;;
  start) [ $# -eq 3 ] || die "usage: $0 start DATADIR PORT"; start_server "$2" "$3" ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop DATADIR"; stop_server "$2" ;;
  wait-apt-lock) wait_for_apt_lock ;;
  *) die "usage: $0 install | start DATADIR PORT | stop DATADIR | wait-apt-lock" ;;
esac
