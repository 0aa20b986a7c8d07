#!/bin/sh
# deps.sh - makes sure the Debian packages hubmirror builds and tests with are
# installed; installs the missing ones with apt-get (as root or via sudo).
# Usage: mk/deps.sh build|test|demo|bench
set -u
want=$1
pkgs="pkg-config libcurl4-openssl-dev libssl-dev libsqlite3-dev libarchive-dev libjansson-dev libmicrohttpd-dev libpcre2-dev zlib1g-dev"
case "$want" in
test) pkgs="$pkgs python3 python3-numpy chromium ceph-mon ceph-osd radosgw ceph-common s3cmd curl nginx tmux" ;;
demo) pkgs="$pkgs python3" ;;
bench) pkgs="$pkgs python3 nginx aria2 curl" ;;
esac
missing=""
for p in $pkgs; do
	# dpkg-query tells whether the package is installed, whatever its version
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
	case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
echo "hubmirror: installing missing packages:$missing" >&2
if [ "$(id -u)" = 0 ]; then
	sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	sudo="sudo -n"
else
	echo "hubmirror: missing packages; run: sudo apt-get install -y$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends $missing >&2; then
	$sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends $missing >&2 && exit 0
	echo "hubmirror: apt-get failed; run: sudo apt-get install -y$missing" >&2
	exit 1
fi
