#!/bin/sh
# run.sh - builds the h2_trailers proof (echo_server + src/h2_reply.c, and
# the gRPC C core client if libgrpc-dev is there) and runs it against real
# clients on loopback. Exits non-zero on any failure; every step is bounded.
#
#   tests/h2_trailers/run.sh              checks: h2c + TLS (~15 s)
#   tests/h2_trailers/run.sh --valgrind   also runs the frame-level/reset
#                                         checks with the server under valgrind
#   tests/h2_trailers/run.sh --bench      also h2load: gRPC echo vs a trivial
#                                         h2o handler, and RSS over 2x100k calls
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
MODE=${1:-}
TMP=$(mktemp -d /tmp/h2_trailers.XXXXXX)
PIDS=""

cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

die() { echo "run.sh: FAIL: $*" >&2; exit 1; }

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server LOGNAME PORT [args...] [-- wrapper...]: sets SERVER_PID
start_server() {
    log=$TMP/$1.log; port=$2; shift 2
    "$@" > "$log" 2>&1 &
    SERVER_PID=$!
    PIDS="$PIDS $SERVER_PID"
    i=0
    until grep -q listening "$log" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 300 ] || die "server did not start: $(cat "$log")"
        kill -0 $SERVER_PID 2>/dev/null || die "server exited: $(cat "$log")"
        sleep 0.1
    done
}

stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -DH2O_USE_LIBUV=0"
echo "== build"
gcc $CFLAGS -I"$ROOT/src" -I"$ROOT/src/compat" "$HERE/echo_server.c" "$ROOT/src/h2_reply.c" "$ROOT/src/h2_path.c" \
    -o "$TMP/echo_server" $(pkg-config --libs libh2o-evloop openssl) -lpthread
HAVE_CORE=0
if pkg-config --exists grpc; then
    gcc $CFLAGS "$HERE/core_client.c" -o "$TMP/core_client" $(pkg-config --cflags --libs grpc) && HAVE_CORE=1
fi

echo "== h2c (prior knowledge)"
PORT=$(free_port)
start_server h2c "$PORT" "$TMP/echo_server" "$PORT"
H2C_PID=$SERVER_PID
timeout 120 $PY "$HERE/h2raw.py" "$PORT" || die "h2raw.py"
timeout 180 $PY "$HERE/check.py" "127.0.0.1:$PORT" || die "check.py"
if [ $HAVE_CORE = 1 ]; then
    timeout 60 "$TMP/core_client" "127.0.0.1:$PORT" || die "core_client"
else
    echo "(no libgrpc-dev: C core client skipped)"
fi
code=$(curl -s --max-time 5 --http1.1 -o /dev/null -w '%{http_code}' -X POST --data-binary x "http://127.0.0.1:$PORT/echo.Echo/Echo")
[ "$code" = 505 ] || die "HTTP/1.1 fallback gave $code"
echo "ok  HTTP/1.1 request: shim returns -1, fallback answers 505"
kill -0 $H2C_PID 2>/dev/null || die "server died"

echo "== TLS + ALPN h2"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
TPORT=$(free_port)
start_server tls "$TPORT" "$TMP/echo_server" "$TPORT" "$TMP/cert.pem" "$TMP/key.pem"
TLS_PID=$SERVER_PID
timeout 180 $PY "$HERE/check.py" "127.0.0.1:$TPORT" --tls "$TMP/cert.pem" || die "check.py (TLS)"
if [ $HAVE_CORE = 1 ]; then
    timeout 60 "$TMP/core_client" "127.0.0.1:$TPORT" --tls "$TMP/cert.pem" || die "core_client (TLS)"
fi
kill -0 $TLS_PID 2>/dev/null || die "TLS server died"
stop_server $TLS_PID

if [ "$MODE" = --valgrind ]; then
    echo "== valgrind"
    command -v valgrind > /dev/null || die "valgrind not installed"
    VPORT=$(free_port)
    start_server valgrind "$VPORT" valgrind --log-file="$TMP/vg.out" "$TMP/echo_server" "$VPORT"
    VG_PID=$SERVER_PID
    timeout 300 $PY "$HERE/h2raw.py" "$VPORT" || die "h2raw.py under valgrind"
    stop_server $VG_PID
    grep -q "ERROR SUMMARY: 0 errors" "$TMP/vg.out" || { cat "$TMP/vg.out"; die "valgrind reported errors"; }
    echo "ok  valgrind: 0 errors"
fi

if [ "$MODE" = --bench ]; then
    echo "== bench (loopback, server single-threaded, h2load -t1 -c4 -m16)"
    command -v h2load > /dev/null || die "h2load missing (apt-get install -y nghttp2-client)"
    printf '\000\000\000\000\005hello' > "$TMP/req.bin"
    H="-H content-type:application/grpc -H te:trailers"
    rate() { grep -o 'finished in [^,]*, [0-9.]* req/s' | sed 's/.*, //'; }
    base_get=$(timeout 30 h2load -t1 -c4 -m16 -D 5 "http://127.0.0.1:$PORT/plain" | rate)
    base_post=$(timeout 30 h2load -t1 -c4 -m16 -D 5 -d "$TMP/req.bin" "http://127.0.0.1:$PORT/plain" | rate)
    grpc=$(timeout 30 h2load -t1 -c4 -m16 -D 5 $H -d "$TMP/req.bin" "http://127.0.0.1:$PORT/echo.Echo/Echo" | rate)
    echo "trivial h2o handler, GET:        $base_get"
    echo "trivial h2o handler, POST 10 B:  $base_post"
    echo "gRPC echo with trailers:         $grpc"
    rss() { awk '/VmRSS/ {print $2}' /proc/$H2C_PID/status; }
    r0=$(rss)
    out=$(timeout 120 h2load -t1 -c4 -m16 -n 100000 $H -d "$TMP/req.bin" "http://127.0.0.1:$PORT/echo.Echo/Echo")
    echo "$out" | grep -q "100000 succeeded" || die "h2load: $(echo "$out" | grep requests:)"
    r1=$(rss)
    timeout 120 h2load -t1 -c4 -m16 -n 100000 $H -d "$TMP/req.bin" "http://127.0.0.1:$PORT/echo.Echo/Echo" > /dev/null
    r2=$(rss)
    timeout 120 h2load -t1 -c4 -m16 -n 2000 -d "$TMP/req.bin" $H "http://127.0.0.1:$PORT/echo.Echo/Big" > /dev/null
    r3=$(rss)
    echo "RSS kB: start $r0, after 100k echo $r1, after 200k $r2, after 2000 x 200 KB $r3"
fi

kill -0 $H2C_PID 2>/dev/null || die "server died"
echo "PASS tests/h2_trailers"
