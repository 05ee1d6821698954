#!/bin/sh
# tests/package/test_deb.sh - the Debian package, end to end:
#   1. dpkg-buildpackage -b in a copy of the source (debian/ artefacts stay
#      out of the repository), without tests (nocheck; BUILD_TESTING=OFF);
#   2. the .deb holds the binary, tokend(8), the unit and the configuration;
#   3. dpkg -i; man -w finds the page; systemd-analyze verify passes on the
#      unit; `tokend config check` accepts the packaged configuration;
#   4. /usr/bin/tokend serve on a temporary data directory and a loopback
#      port answers GET /healthz, and stops cleanly on SIGTERM;
#   5. dpkg --purge, whatever happened (trap), so the machine stays clean.
# Needs root (dpkg -i): skipped (exit 77) otherwise. Needs debhelper, dpkg-dev,
# fakeroot, man-db and curl (tools/deps installs them).
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
say() { echo "test_deb: $*"; }

if [ "$(id -u)" != 0 ]; then
    say "SKIP: installing a package needs root (dpkg -i); CI runs as root"
    exit 77
fi
if dpkg-query -W -f='${Status}' tokend 2>/dev/null | grep -q 'install ok installed'; then
    say "SKIP: a tokend package is already installed on this machine: not touching it"
    exit 77
fi
for tool in dpkg-buildpackage dh fakeroot man curl; do
    command -v "$tool" >/dev/null || { say "FAIL: $tool is missing (run tools/deps)"; exit 1; }
done

work=$(mktemp -d /tmp/tokend-deb.XXXXXX)
installed=0
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    if [ "$installed" = 1 ]; then
        dpkg --purge tokend >"$work/purge.log" 2>&1 || { say "dpkg --purge failed:"; cat "$work/purge.log"; }
    fi
    [ -n "${KEEP_WORK:-}" ] && { say "kept $work"; return; }
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# 1. Build in a copy: the tracked tree as it is in the working directory.
mkdir "$work/src"
tar -C "$repo" --exclude=./.git --exclude='./build*' --exclude=./var --exclude=./debian/tokend \
    --exclude=./debian/tmp --exclude=./obj-* -cf - . | tar -C "$work/src" -xf -
start=$(date +%s)
if ! (cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
        nice dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1); then
    say "FAIL: dpkg-buildpackage; the end of its log:"
    tail -40 "$work/build.log"
    exit 1
fi
deb=$(ls "$work"/tokend_*.deb)
say "built $(basename "$deb") in $(( $(date +%s) - start )) s"

# 2. Contents.
dpkg-deb -c "$deb" >"$work/contents"
for f in ./usr/bin/tokend ./usr/share/man/man8/tokend.8.gz ./lib/systemd/system/tokend.service \
         ./etc/tokend/tokend.conf; do
    grep -q " $f\$" "$work/contents" || { say "FAIL: $f is not in the package"; cat "$work/contents"; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q libh2o || { say "FAIL: no shlibs Depends"; exit 1; }

# 3. Install and check what it put in place.
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/install.log" 2>&1 || {
    installed=1; say "FAIL: dpkg -i"; cat "$work/install.log"; exit 1; }
installed=1
page=$(man -w tokend) || { say "FAIL: man -w tokend finds no page"; exit 1; }
say "man page: $page"
man -P cat 8 tokend 2>/dev/null | grep -q "tokend config check" || { say "FAIL: man 8 tokend renders no text"; exit 1; }
grep -qx "/etc/tokend/tokend.conf" /var/lib/dpkg/info/tokend.conffiles || { say "FAIL: tokend.conf is not a conffile"; exit 1; }
if command -v systemd-analyze >/dev/null; then
    # Offline: only the unit file itself is judged (no running systemd needed).
    systemd-analyze verify /lib/systemd/system/tokend.service || { say "FAIL: systemd-analyze verify"; exit 1; }
    say "systemd-analyze verify: ok"
else
    say "systemd-analyze not found: unit not verified"
fi
/usr/bin/tokend config check /etc/tokend/tokend.conf >"$work/check.out" || { say "FAIL: config check of the packaged file"; exit 1; }

# 4. Serve from the package.
data="$work/data"
/usr/bin/tokend app create --data "$data" --name pkg >/dev/null
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
/usr/bin/tokend serve --config /etc/tokend/tokend.conf --data "$data" --listen "127.0.0.1:$port" \
    --threads 1 --workers 1 >"$work/serve.log" 2>&1 &
pid=$!
body=
for _ in $(seq 1 150); do
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null) && [ -n "$body" ] && break
    kill -0 "$pid" 2>/dev/null || { say "FAIL: tokend serve exited:"; cat "$work/serve.log"; exit 1; }
    sleep 0.1
done
echo "$body" | grep -q '"status":"SERVING"' || { say "FAIL: GET /healthz gave: $body"; cat "$work/serve.log"; exit 1; }
say "GET /healthz: $body"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" = 0 ] || { say "FAIL: tokend serve exited $rc after SIGTERM"; cat "$work/serve.log"; exit 1; }

# 5. Remove (the trap purges too, on failure).
dpkg --purge tokend >"$work/purge.log" 2>&1 || { say "FAIL: dpkg --purge"; cat "$work/purge.log"; exit 1; }
installed=0
[ ! -e /usr/bin/tokend ] && [ ! -e /etc/tokend/tokend.conf ] || { say "FAIL: files left after purge"; exit 1; }
say "ok: built, installed, served, purged"
