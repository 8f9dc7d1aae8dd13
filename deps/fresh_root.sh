#!/usr/bin/env bash
# Prove deps/apt-packages.txt on a clean Debian 12: `make fresh-check` (as root) runs this.
#
#  1. mmdebstrap builds a bookworm root, variant minbase plus EXACTLY the packages listed in
#     deps/apt-packages.txt (nothing else this machine has), in a fresh directory under /var/tmp.
#  2. The repo's working tree (git ls-files: tracked and untracked-not-ignored files; FRESH_SOURCE=head
#     takes `git archive HEAD` instead) is copied to /src/nsg in the root.
#  3. In the root (chroot, in a private mount and pid namespace: /proc, /sys, /dev, a private tmpfs /run):
#     the presence of every peer binary and plugin; the Makefile's own `venv` recipe (as `make -n` prints
#     it: python3 -m venv, pip install -e '.[test]' from PyPI); `python -m tests.peers`; then pytest, with
#     CI=true so that a missing peer fails instead of skipping, on the unit tests, every interop test (real
#     strongSwan with its openssl plugin, FRR, GoBGP, strongSwan's pki) and the qemu guest test.
#     dockerd, containerd and runc are only checked (installed, --version): the root mounts no cgroups,
#     and when it did (an rbind of /sys), a container's /sys/class/net showed this machine's interfaces
#     (tests/netns/test_containers_docker.py read eth0's MTU 1400, the host's): the docker tests need a
#     real machine (`make test`).
#  4. Always (trap, also on failure or Ctrl-C): every process left in the namespace is killed by pid, the
#     namespace's mounts go with it (any mount still under the root is unmounted) and the root is removed.
#
# Knobs (environment): FRESH_TESTS (pytest arguments, default below), FRESH_SOURCE=worktree|head,
# FRESH_KEEP=1 (keep the root; it is printed), FRESH_APT_CACHE (a directory keeping downloaded .debs
# between runs, default /var/cache/nsg-fresh-root/archives; empty: download everything each time),
# FRESH_RESULTS (where the log and junit XML are kept, default /var/tmp/nsg-fresh-check),
# FRESH_MIRROR / FRESH_SECURITY_MIRROR (Debian mirrors), FRESH_APT_LIST (another list, e.g. one with a
# package left out, to see the check catch it).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APT_LIST=${FRESH_APT_LIST:-$REPO/deps/apt-packages.txt}
SUITE=bookworm
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${FRESH_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SOURCE=${FRESH_SOURCE:-worktree}
KEEP=${FRESH_KEEP:-0}
APT_CACHE=${FRESH_APT_CACHE-/var/cache/nsg-fresh-root/archives}
RESULTS=${FRESH_RESULTS:-/var/tmp/nsg-fresh-check}
DEFAULT_TESTS="tests/unit tests/interop tests/netns/test_vm_guest.py"
TESTS=${FRESH_TESTS:-$DEFAULT_TESTS}

say() { printf '\n== fresh-check: %s\n' "$*"; }
die() { printf 'fresh-check: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, chroot, network namespaces)"
command -v git >/dev/null || die "needs git (to list the repo's files)"
command -v make >/dev/null || die "needs make (to read the Makefile's venv recipe)"

# --- the package list, parsed like the Makefile's `apt` target (whole-line comments, blank lines) ----------
mapfile -t PACKAGES < <(grep -v '^\s*#' "$APT_LIST" | grep -v '^\s*$' | while read -r p; do echo "$p"; done)
for p in "${PACKAGES[@]}"; do
    [[ $p =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "$APT_LIST: '$p' is not a package name (comments go on their own line)"
done
[ "${#PACKAGES[@]}" -gt 0 ] || die "$APT_LIST lists no package"

if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap on this machine (deps/apt-packages.txt lists it for this check)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null
fi

# --- cleanup, whatever happens from here on ---------------------------------------------------------------
ROOT=""
NS_PID=""
T0=$SECONDS

mounts_under() {  # mount points at or below $1 in this (the host's) mount namespace, deepest first
    awk -v r="$1" '{ m = $5; gsub(/\\040/, " ", m); if (m == r || index(m, r "/") == 1) print m }' \
        /proc/self/mountinfo | sort -r
}

cleanup() {
    local rc=$? pid children alive
    set +e
    trap - EXIT INT TERM
    if [ -n "$NS_PID" ] && kill -0 "$NS_PID" 2>/dev/null; then
        # unshare's children: the namespace's pid 1 (killing it ends every process left in the namespace)
        # and tee; unshare runs with --kill-child, so its own death kills pid 1 as well
        children=$(cat /proc/"$NS_PID"/task/*/children 2>/dev/null)
        for pid in $children; do kill -KILL "$pid" 2>/dev/null; done
        kill -KILL "$NS_PID" 2>/dev/null
        wait "$NS_PID" 2>/dev/null
        for _ in $(seq 100); do  # the namespaces (and their mounts) are gone with the last process in them
            alive=0
            for pid in $children; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
    fi
    if [ -n "$ROOT" ] && [ -d "$ROOT" ]; then
        # everything was mounted in private mount namespaces; unmount whatever is still here anyway
        local m
        for m in $(mounts_under "$ROOT"); do umount -R "$m" 2>/dev/null || umount -l "$m"; done
        if [ -n "$(mounts_under "$ROOT")" ]; then
            echo "fresh-check: mounts left under $ROOT, not removing it:" >&2
            mounts_under "$ROOT" >&2
            rc=1
        elif [ "$KEEP" = 1 ]; then
            echo "fresh-check: root kept at $ROOT (FRESH_KEEP=1): rm -rf --one-file-system $ROOT"
        else
            rm -rf --one-file-system "$ROOT"
            [ -e "$ROOT" ] && { echo "fresh-check: could not remove $ROOT" >&2; rc=1; }
        fi
    fi
    printf 'fresh-check: %s after %ss\n' "$([ "$rc" = 0 ] && echo PASSED || echo "FAILED ($rc)")" $((SECONDS - T0))
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$RESULTS"
rm -f "$RESULTS"/*
ROOT=$(mktemp -d /var/tmp/nsg-fresh-root.XXXXXX)
chmod 755 "$ROOT"  # the root's "/": daemons that drop privileges (frr) must traverse it

# --- 1. the root -----------------------------------------------------------------------------------------
say "building a $SUITE minbase root in $ROOT with the ${#PACKAGES[@]} packages of deps/apt-packages.txt"
printf '   %s\n' "${PACKAGES[*]}"
hooks=()
# This machine's own local CAs (a network that intercepts TLS), like its resolv.conf, are the network's,
# not the project's: they go into /usr/local/share/ca-certificates, which the ca-certificates package
# (if the list has it) turns into the system bundle; without that package nothing reads them.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    hooks+=(--setup-hook='mkdir -p "$1/usr/local/share/ca-certificates" &&
            cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"')
fi
if [ -n "$APT_CACHE" ]; then
    mkdir -p "$APT_CACHE"
    hooks+=(--skip=essential/unlink
            --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\""
            --setup-hook="sync-in $APT_CACHE /var/cache/apt/archives/"
            --customize-hook="sync-out /var/cache/apt/archives $APT_CACHE")
fi
t=$SECONDS
# In its own mount and pid namespace (in the background, so a signal reaches the traps at once): the mounts
# mmdebstrap makes while installing never reach this machine's, and cleanup ends apt and dpkg with it.
unshare --mount --pid --fork --kill-child --propagation private -- \
    mmdebstrap --mode=root --variant=minbase --format=directory --components=main \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" "${hooks[@]}" \
        "$SUITE" "$ROOT" \
        "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main" > >(tee "$RESULTS/mmdebstrap.log") 2>&1 &
NS_PID=$!
wait "$NS_PID" || die "mmdebstrap failed (log: $RESULTS/mmdebstrap.log)"
NS_PID=""
[ -x "$ROOT/usr/bin/python3" ] || die "mmdebstrap left no root in $ROOT"
BUILD_TIME=$((SECONDS - t))
rm -rf "$ROOT"/var/cache/apt/archives/*.deb  # the .debs are in $APT_CACHE; not part of the root's size
ROOT_SIZE=$(du -sxh "$ROOT" | cut -f1)
say "root built in ${BUILD_TIME}s, $ROOT_SIZE; $(chroot "$ROOT" dpkg-query -W | wc -l) packages installed"
chroot "$ROOT" dpkg-query -W -f='${Package} ${Version}\n' >"$RESULTS/packages.txt"

# --- 2. the repo -----------------------------------------------------------------------------------------
SRC=$ROOT/src/nsg
mkdir -p "$SRC" "$ROOT/fresh"
if [ "$SOURCE" = head ]; then
    say "copying the repo: git archive HEAD ($(git -C "$REPO" rev-parse --short HEAD))"
    git -C "$REPO" archive HEAD | tar -x -C "$SRC"
else
    say "copying the repo: the working tree's files (git ls-files: tracked + untracked, not ignored)"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
        tar -c --null --no-recursion -T - -f -) | tar -x -C "$SRC"
fi
# the Makefile's venv recipe, exactly as make would run it (read here: the root has no make)
(cd "$SRC" && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -s -n -B venv PYTHON=python3) >"$ROOT/fresh/venv.sh"
grep -q "pip install" "$ROOT/fresh/venv.sh" || die "could not read the Makefile's venv recipe"
# tests/build's Buildroot release snapshot is a file of this machine, not a package: copied in when present
BR_TARBALL=${NSG_BUILDROOT_TARBALL:-/work/shared/tools/buildroot-2026.02.3.tar.xz}
if [ -f "$BR_TARBALL" ]; then
    cp "$BR_TARBALL" "$ROOT/fresh/buildroot.tar.xz"
fi

# --- 3. inside the root ----------------------------------------------------------------------------------
# pid 1 of the namespace: runs the check, reaps every orphan (daemons that daemonize), and when the check
# ends kills by pid whatever is still running in the namespace.
cat >"$ROOT/fresh/init.py" <<'EOF'
import os, signal, sys

child = os.fork()
if child == 0:
    for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    os.execvp(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the check (same process group); it ends, then we
status = 1
while True:
    try:
        pid, st = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        status = os.waitstatus_to_exitcode(st)
        break
left = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != 1]
for pid in left:
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
        print(f"fresh-check: killing leftover pid {pid}: {cmd}", flush=True)
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
sys.exit(status if status >= 0 else 128 - status)
EOF

cat >"$ROOT/fresh/check.sh" <<'EOF'
set -u
cd /src/nsg
fail=0
check() {  # check WHAT CMD...: run CMD, print its first line of output, count a failure
    local what=$1 out; shift
    if out=$("$@" 2>&1); then printf '   ok      %-34s %s\n' "$what" "$(head -n1 <<<"$out")"
    else printf '   MISSING %-34s %s\n' "$what" "$(head -n1 <<<"$out")"; fail=1; fi
}
echo; echo "== fresh-check: presence (binaries and plugins in the clean root)"
check "dockerd --version" dockerd --version
check "containerd --version" containerd --version
check "runc --version" runc --version
check "qemu-system-x86_64 --version" qemu-system-x86_64 --version
check "guest kernel /boot/vmlinuz-*" sh -c 'ls /boot/vmlinuz-*'
check "busybox (static)" sh -c '/bin/busybox --help | head -n1'
check "charon --version" /usr/lib/ipsec/charon --version
check "pki (strongswan-pki)" sh -c "command -v pki"
# swanctl loads libstrongswan's plugins itself: its --help names those that loaded (openssl among them)
check "swanctl --help: openssl loads" sh -c 'swanctl --help 2>/dev/null | grep "^loaded plugins:.* openssl"'
for p in $(python3 -c 'import ast,sys; t=ast.parse(open("tests/interop/strongswan.py").read())
for n in t.body:
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PLUGINS": print(*ast.literal_eval(n.value))'); do
    check "charon plugin $p" ls /usr/lib/ipsec/plugins/libstrongswan-$p.so
done
check "vtysh -h" sh -c 'vtysh -h | grep -i "frr (version"'   # FRR 8.4's vtysh has no --version
check "zebra -v" /usr/lib/frr/zebra -v
check "bgpd -v" /usr/lib/frr/bgpd -v
check "gobgpd --version" gobgpd --version
check "gobgp --version" gobgp --version
check "ip -V" ip -V
check "nft --version" nft --version
check "tcpdump --version" tcpdump --version
check "dnsmasq --version" dnsmasq --version
check "iperf3 --version" iperf3 --version
check "avahi-daemon --version" avahi-daemon --version
check "curl --version" curl --version
check "openssl version" openssl version
check "ping -V" ping -V
[ "$fail" = 0 ] || echo "== fresh-check: something above is MISSING from the clean root"

echo; echo "== fresh-check: the Makefile's venv recipe"
cat /fresh/venv.sh
t=$SECONDS
bash -e -x /fresh/venv.sh || { echo "== fresh-check: the venv recipe FAILED"; exit 1; }
echo "== fresh-check: venv ready in $((SECONDS - t))s"

echo; echo "== fresh-check: python -m tests.peers"
.venv/bin/python -m tests.peers || fail=1

echo; echo "== fresh-check: pytest (CI=true: a missing peer fails) $FRESH_TESTS"
t=$SECONDS
# shellcheck disable=SC2086
.venv/bin/python -m pytest -p no:cacheprovider -q -rfEs --junitxml=/fresh/junit.xml $FRESH_TESTS
rc=$?
echo "== fresh-check: pytest exit $rc in $((SECONDS - t))s"
[ "$rc" = 0 ] || fail=1
exit "$fail"
EOF

say "running the check inside the root (private mount + pid namespace, chroot)"
PASS_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
          TERM=dumb CI=true "FRESH_TESTS=$TESTS")
[ -f "$ROOT/fresh/buildroot.tar.xz" ] && PASS_ENV+=(NSG_BUILDROOT_TARBALL=/fresh/buildroot.tar.xz)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && PASS_ENV+=("$v=${!v}")
done
t=$SECONDS
# in the background, so that the traps run at once on a signal; its pid is unshare's, whose child is pid 1
unshare --mount --pid --fork --kill-child --propagation private -- /bin/bash -euc '
    root=$1; shift
    mount --bind "$root" "$root"              # a mount point, so `ip netns exec` can make "/" a slave
    mount -t proc proc "$root/proc"           # this pid namespace'"'"'s processes
    mount -t sysfs sysfs "$root/sys"         # no cgroups: dockerd is not run in here (see the header)
    mount --rbind /dev "$root/dev"            # /dev/net/tun (kernel-libipsec), /dev/shm, /dev/pts
    mount -t tmpfs -o mode=755 tmpfs "$root/run"   # private /run, /run/netns for ip netns
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    exec chroot "$root" /usr/bin/env -i "$@" /usr/bin/python3 /fresh/init.py /bin/bash /fresh/check.sh
' fresh "$ROOT" "${PASS_ENV[@]}" > >(tee "$RESULTS/check.log") 2>&1 &
NS_PID=$!
CHECK_RC=0
wait "$NS_PID" || CHECK_RC=$?
NS_PID=""
cp "$ROOT/fresh/junit.xml" "$RESULTS/" 2>/dev/null || true
CHECK_TIME=$((SECONDS - t))

say "summary"
printf '   root: %s (%s, %s packages), built in %ss; check in %ss; total %ss\n' "$ROOT" "$ROOT_SIZE" \
    "$(wc -l <"$RESULTS/packages.txt")" "$BUILD_TIME" "$CHECK_TIME" $((SECONDS - T0))
printf '   logs: %s (mmdebstrap.log, packages.txt, check.log, junit.xml)\n' "$RESULTS"
exit "$CHECK_RC"
