# Sourced by .ci/run: start PostgreSQL and Redis on 127.0.0.1 for the storage tests and export their URLs.
# Usable by hand too: `source .ci/services.sh && start_services`.

MERLIN_PG_PORT=${MERLIN_PG_PORT:-55432}
MERLIN_REDIS_PORT=${MERLIN_REDIS_PORT:-56379}
MERLIN_SERVICES_DIR=${MERLIN_SERVICES_DIR:-/tmp/merlin-ci-services}

start_postgres() {
  local bindir datadir
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  datadir="$MERLIN_SERVICES_DIR/pg"
  mkdir -p "$MERLIN_SERVICES_DIR"
  chown postgres "$MERLIN_SERVICES_DIR" 2>/dev/null || true
  if [ ! -d "$datadir" ]; then
    su postgres -c "$bindir/initdb -D $datadir -A md5 --pwfile=<(echo postgres) -U postgres" >/dev/null
  fi
  su postgres -c "$bindir/pg_ctl -D $datadir -o '-p $MERLIN_PG_PORT -k /tmp -c listen_addresses=127.0.0.1' -l $datadir/log -w start" >/dev/null
  PGPASSWORD=postgres psql -h 127.0.0.1 -p "$MERLIN_PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='merlin'" | grep -q 1 \
    || PGPASSWORD=postgres psql -h 127.0.0.1 -p "$MERLIN_PG_PORT" -U postgres -qc "CREATE ROLE merlin LOGIN PASSWORD 'merlin' CREATEDB"
  PGPASSWORD=postgres psql -h 127.0.0.1 -p "$MERLIN_PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='merlin'" | grep -q 1 \
    || PGPASSWORD=postgres psql -h 127.0.0.1 -p "$MERLIN_PG_PORT" -U postgres -qc "CREATE DATABASE merlin OWNER merlin"
  export MERLIN_TEST_POSTGRES_URL="postgresql://merlin:merlin@127.0.0.1:$MERLIN_PG_PORT/merlin"
}

start_redis() {
  mkdir -p "$MERLIN_SERVICES_DIR/redis"
  redis-server --port "$MERLIN_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$MERLIN_SERVICES_DIR/redis" --daemonize yes >/dev/null
  for _ in $(seq 50); do redis-cli -p "$MERLIN_REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  export MERLIN_TEST_REDIS_URL="redis://127.0.0.1:$MERLIN_REDIS_PORT/0"
}

start_services() {
  start_postgres
  start_redis
  echo "PostgreSQL: $MERLIN_TEST_POSTGRES_URL"
  echo "Redis:      $MERLIN_TEST_REDIS_URL"
}
