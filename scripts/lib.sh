# Sourced by the scripts that run a server of their own (bench, loadgen-smoke, image-smoke).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server BIN PORT LOG [NAME=VALUE ...]: runs `BIN serve` on 127.0.0.1:PORT with the
# given environment on top (RUST_LOG=warn unless given), stderr to LOG; sets $server to its
# pid and returns once it answers SERVING, or fails after $server_start_seconds (30).
# When the array $server_launcher is set, the server runs under it (`valgrind ...`: the
# launcher must exec the server in its own process, so $server is the server's pid).
start_server() {
  local bin=$1 port=$2 log=$3
  shift 3
  env RUST_LOG=warn "$@" DISPUTE_LISTEN_ADDR="127.0.0.1:${port}" DISPUTE_METRICS_ADDR=127.0.0.1:0 \
    ${server_launcher[@]+"${server_launcher[@]}"} "${bin}" serve 2>"${log}" &
  server=$!
  for _ in $(seq 1 $((${server_start_seconds:-30} * 5))); do
    "${bin}" healthcheck --addr "127.0.0.1:${port}" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the server on port ${port} never became SERVING; its log is ${log}" >&2
  return 1
}

# loadgen_on_a_fresh_database BIN [LOADGEN FLAGS ...]: a database of its own on the server of
# $DATABASE_URL, `BIN serve` on it, then the release loadgen of $target with the flags
# given (against that server, measuring its CPU); prints loadgen's JSON summary, and drops
# the server and the database. Needs $bindir (PostgreSQL's binaries) and $secret.
loadgen_on_a_fresh_database() {
  local bin=$1 server_url=${DATABASE_URL%/*} db="bench_$(date +%s%N)" log port result
  shift
  "${bindir}/psql" -X -q "${server_url}/postgres" -c "CREATE DATABASE ${db}"
  log=$(mktemp)
  port=$(free_port)
  start_server "${bin}" "${port}" "${log}" DATABASE_URL="${server_url}/${db}" DISPUTE_JWT_HS256_SECRET="${secret}"
  result=$(DISPUTE_JWT_HS256_SECRET="${secret}" "${target}/release/loadgen" --addr "http://127.0.0.1:${port}" \
    --server-pid "${server}" --json "$@")
  kill "${server}"
  wait "${server}" 2>/dev/null || true
  "${bindir}/psql" -X -q "${server_url}/postgres" -c "DROP DATABASE ${db} WITH (FORCE)"
  rm -f "${log}"
  echo "${result}"
}
