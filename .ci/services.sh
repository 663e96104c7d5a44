# Sourced by .ci/run: start PostgreSQL, MariaDB and Redis on 127.0.0.1 for the storage tests and export
#   MERLIN_TEST_POSTGRES_URL=postgresql://merlin:merlin@127.0.0.1:55432/merlin
#   MERLIN_TEST_MYSQL_URL=mysql://merlin:merlin@127.0.0.1:53306/merlin
#   MERLIN_TEST_REDIS_URL=redis://127.0.0.1:56379/0
# Usable by hand too:  source .ci/services.sh && start_services     (stop_services to stop them)
#
# Idempotent (a server already answering on its port is reused, an existing data folder is kept),
# works as root (PostgreSQL then runs as the 'postgres' user, MariaDB as 'mysql') or as an ordinary
# user, and fails loudly: every function prints what went wrong (with the server log's tail) and
# returns 1, which stops a caller running under `set -e`.  Needs the Debian packages postgresql,
# mariadb-server and redis-server.
# This file is sourced, so it sets no shell options of its own.

MERLIN_PG_PORT=${MERLIN_PG_PORT:-55432}
MERLIN_REDIS_PORT=${MERLIN_REDIS_PORT:-56379}
MERLIN_MYSQL_PORT=${MERLIN_MYSQL_PORT:-53306}
MERLIN_SERVICES_DIR=${MERLIN_SERVICES_DIR:-/tmp/merlin-ci-services}

_merlin_fail() {
  echo "services.sh: ERROR: $*" >&2
  return 1
}

# Run a command as the PostgreSQL server's owner: 'postgres' when we are root (the server refuses
# to run as root), ourselves otherwise.
_merlin_pg_run() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

_merlin_pg_bindir() {
  local dir
  if [ -n "${MERLIN_PG_BINDIR:-}" ]; then
    echo "$MERLIN_PG_BINDIR"
    return 0
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$dir" ] && command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir)
  fi
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] || return 1
  echo "$dir"
}

start_postgres() {
  local bindir datadir sockdir log url
  bindir=$(_merlin_pg_bindir) \
    || { _merlin_fail "PostgreSQL server binaries not found (apt-get install postgresql, or set MERLIN_PG_BINDIR)"; return 1; }
  command -v psql >/dev/null 2>&1 || { _merlin_fail "psql not found (apt-get install postgresql-client)"; return 1; }
  datadir="$MERLIN_SERVICES_DIR/pg"
  sockdir="$MERLIN_SERVICES_DIR/pg-socket"
  log="$MERLIN_SERVICES_DIR/pg.log"
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    _merlin_fail "running as root but there is no 'postgres' user (the postgresql package creates it)"; return 1
  fi
  mkdir -p "$MERLIN_SERVICES_DIR" "$sockdir" || { _merlin_fail "cannot create $MERLIN_SERVICES_DIR"; return 1; }
  chmod 755 "$MERLIN_SERVICES_DIR"
  chmod 700 "$sockdir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$sockdir" || return 1
    touch "$log" && chown postgres "$log" || return 1
  fi

  if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$MERLIN_PG_PORT"; then
    echo "PostgreSQL already answering on 127.0.0.1:$MERLIN_PG_PORT; reusing it"
  else
    if [ ! -f "$datadir/PG_VERSION" ]; then
      rm -rf "$datadir"
      mkdir -p "$datadir" && chmod 700 "$datadir" || { _merlin_fail "cannot create $datadir"; return 1; }
      [ "$(id -u)" = 0 ] && chown postgres "$datadir"
      # superuser 'postgres' over the private unix socket only (trust); every TCP login needs a password
      _merlin_pg_run "$bindir/initdb" -D "$datadir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --no-locale >"$MERLIN_SERVICES_DIR/initdb.log" 2>&1 \
        || { cat "$MERLIN_SERVICES_DIR/initdb.log" >&2; _merlin_fail "initdb failed in $datadir"; return 1; }
    fi
    _merlin_pg_run "$bindir/pg_ctl" -D "$datadir" -l "$log" -w -t 60 \
      -o "-p $MERLIN_PG_PORT -k $sockdir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
      || { tail -n 30 "$log" >&2; _merlin_fail "PostgreSQL did not start on 127.0.0.1:$MERLIN_PG_PORT (log: $log)"; return 1; }
  fi

  # role and database, created once (the superuser reaches the server over the private socket)
  if [ -S "$sockdir/.s.PGSQL.$MERLIN_PG_PORT" ]; then
    _merlin_pg_run psql -h "$sockdir" -p "$MERLIN_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA >/dev/null <<'SQL' \
      || { _merlin_fail "could not create the role/database merlin"; return 1; }
SELECT 'CREATE ROLE merlin LOGIN PASSWORD ''merlin'' CREATEDB'
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'merlin') \gexec
SELECT 'CREATE DATABASE merlin OWNER merlin'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'merlin') \gexec
SQL
  fi
  url="postgresql://merlin:merlin@127.0.0.1:$MERLIN_PG_PORT/merlin"
  PGCONNECT_TIMEOUT=5 psql "$url" -qtAc "SELECT 1" >/dev/null \
    || { _merlin_fail "cannot log in to $url (a server not started by this script, without the merlin role?)"; return 1; }
  export MERLIN_TEST_POSTGRES_URL="$url"
}

# -- MariaDB: its own data folder and socket; root logs in over that socket only (unix_socket auth),
# the test user merlin/merlin over TCP on 127.0.0.1
_merlin_mysql_user() {
  if [ "$(id -u)" = 0 ]; then echo mysql; else id -un; fi
}

_merlin_mysql_admin() {  # mariadb client as the server's administrator, over the private socket
  if [ "$(id -u)" = 0 ]; then
    mariadb --no-defaults -u root --socket="$MERLIN_SERVICES_DIR/mysql-socket/mysqld.sock" "$@"
  else
    mariadb --no-defaults -u "$(id -un)" --socket="$MERLIN_SERVICES_DIR/mysql-socket/mysqld.sock" "$@"
  fi
}

start_mysql() {
  local datadir sockdir log owner url i
  command -v mariadbd >/dev/null 2>&1 || { _merlin_fail "mariadbd not found (apt-get install mariadb-server)"; return 1; }
  command -v mariadb-install-db >/dev/null 2>&1 || { _merlin_fail "mariadb-install-db not found (apt-get install mariadb-server)"; return 1; }
  command -v mariadb >/dev/null 2>&1 || { _merlin_fail "mariadb client not found (apt-get install mariadb-client)"; return 1; }
  datadir="$MERLIN_SERVICES_DIR/mysql"
  sockdir="$MERLIN_SERVICES_DIR/mysql-socket"
  log="$MERLIN_SERVICES_DIR/mysql.log"
  owner=$(_merlin_mysql_user)
  if [ "$(id -u)" = 0 ] && ! id mysql >/dev/null 2>&1; then
    _merlin_fail "running as root but there is no 'mysql' user (the mariadb-server package creates it)"; return 1
  fi
  mkdir -p "$MERLIN_SERVICES_DIR" "$sockdir" || { _merlin_fail "cannot create $MERLIN_SERVICES_DIR"; return 1; }
  chmod 755 "$MERLIN_SERVICES_DIR"
  chmod 700 "$sockdir"
  touch "$log" || return 1
  if [ "$(id -u)" = 0 ]; then
    chown mysql "$sockdir" "$log" || return 1
  fi

  # something listening on the port (the log-in below tells whether it is a server we can use)
  if (exec 3<>"/dev/tcp/127.0.0.1/$MERLIN_MYSQL_PORT") 2>/dev/null; then
    echo "MariaDB already answering on 127.0.0.1:$MERLIN_MYSQL_PORT; reusing it"
  else
    if [ ! -d "$datadir/mysql" ]; then
      rm -rf "$datadir"
      mkdir -p "$datadir" && chmod 700 "$datadir" || { _merlin_fail "cannot create $datadir"; return 1; }
      [ "$(id -u)" = 0 ] && chown mysql "$datadir"
      mariadb-install-db --no-defaults --datadir="$datadir" --user="$owner" --auth-root-authentication-method=socket \
        --skip-test-db >"$MERLIN_SERVICES_DIR/mysql-install.log" 2>&1 \
        || { tail -n 30 "$MERLIN_SERVICES_DIR/mysql-install.log" >&2; _merlin_fail "mariadb-install-db failed in $datadir"; return 1; }
    fi
    # setsid: the server outlives the shell that started it (as pg_ctl's and redis' daemons do)
    setsid mariadbd --no-defaults --datadir="$datadir" --user="$owner" --port="$MERLIN_MYSQL_PORT" \
      --bind-address=127.0.0.1 --socket="$sockdir/mysqld.sock" --pid-file="$sockdir/mysqld.pid" \
      --log-error="$log" --max-connections=300 --skip-name-resolve --innodb-buffer-pool-size=64M \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci </dev/null >/dev/null 2>&1 &
    for i in $(seq 600); do  # up to a minute
      _merlin_mysql_admin --connect-timeout=1 -e "SELECT 1" >/dev/null 2>&1 && break
      sleep 0.1
    done
    _merlin_mysql_admin --connect-timeout=2 -e "SELECT 1" >/dev/null 2>&1 \
      || { tail -n 30 "$log" >&2; _merlin_fail "MariaDB did not start on 127.0.0.1:$MERLIN_MYSQL_PORT (log: $log)"; return 1; }
  fi

  # user and database, created once (the administrator reaches the server over the private socket)
  if [ -S "$sockdir/mysqld.sock" ]; then
    _merlin_mysql_admin -e "
      CREATE USER IF NOT EXISTS 'merlin'@'127.0.0.1' IDENTIFIED BY 'merlin';
      CREATE USER IF NOT EXISTS 'merlin'@'localhost' IDENTIFIED BY 'merlin';
      CREATE DATABASE IF NOT EXISTS merlin CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
      GRANT ALL PRIVILEGES ON merlin.* TO 'merlin'@'127.0.0.1';
      GRANT ALL PRIVILEGES ON merlin.* TO 'merlin'@'localhost';" \
      || { _merlin_fail "could not create the user/database merlin"; return 1; }
  fi
  url="mysql://merlin:merlin@127.0.0.1:$MERLIN_MYSQL_PORT/merlin"
  mariadb --no-defaults -h 127.0.0.1 -P "$MERLIN_MYSQL_PORT" -u merlin -pmerlin --connect-timeout=5 merlin \
    -e "SELECT 1" >/dev/null \
    || { _merlin_fail "cannot log in to ${url/:merlin@/:***@} (a server not started by this script, without the merlin user?)"; return 1; }
  export MERLIN_TEST_MYSQL_URL="$url"
}

start_redis() {
  local dir url i
  command -v redis-server >/dev/null 2>&1 || { _merlin_fail "redis-server not found (apt-get install redis-server)"; return 1; }
  command -v redis-cli >/dev/null 2>&1 || { _merlin_fail "redis-cli not found (apt-get install redis-tools)"; return 1; }
  dir="$MERLIN_SERVICES_DIR/redis"
  mkdir -p "$dir" || { _merlin_fail "cannot create $dir"; return 1; }
  if redis-cli -h 127.0.0.1 -p "$MERLIN_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
    echo "Redis already answering on 127.0.0.1:$MERLIN_REDIS_PORT; reusing it"
  else
    redis-server --port "$MERLIN_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      || { _merlin_fail "redis-server failed to start"; return 1; }
    for i in $(seq 100); do
      redis-cli -h 127.0.0.1 -p "$MERLIN_REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$MERLIN_REDIS_PORT" ping 2>/dev/null | grep -q PONG \
      || { tail -n 30 "$dir/redis.log" >&2; _merlin_fail "Redis did not answer on 127.0.0.1:$MERLIN_REDIS_PORT"; return 1; }
  fi
  url="redis://127.0.0.1:$MERLIN_REDIS_PORT/0"
  export MERLIN_TEST_REDIS_URL="$url"
}

start_services() {
  start_postgres || return 1
  start_mysql || return 1
  start_redis || return 1
  echo "PostgreSQL: $MERLIN_TEST_POSTGRES_URL"
  echo "MariaDB:    $MERLIN_TEST_MYSQL_URL"
  echo "Redis:      $MERLIN_TEST_REDIS_URL"
}

stop_services() {
  local bindir i
  if bindir=$(_merlin_pg_bindir) && [ -f "$MERLIN_SERVICES_DIR/pg/postmaster.pid" ]; then
    _merlin_pg_run "$bindir/pg_ctl" -D "$MERLIN_SERVICES_DIR/pg" -m fast -w stop >/dev/null || true
  fi
  if [ -S "$MERLIN_SERVICES_DIR/mysql-socket/mysqld.sock" ]; then
    _merlin_mysql_admin -e "SHUTDOWN" >/dev/null 2>&1 || true
    for i in $(seq 100); do
      [ -S "$MERLIN_SERVICES_DIR/mysql-socket/mysqld.sock" ] || break
      sleep 0.1
    done
  fi
  redis-cli -h 127.0.0.1 -p "$MERLIN_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  unset MERLIN_TEST_POSTGRES_URL MERLIN_TEST_MYSQL_URL MERLIN_TEST_REDIS_URL
}
