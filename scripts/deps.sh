#!/bin/sh
# deps.sh - install the Debian packages wavelock needs to build and test.
# Installs only what is missing; safe to run again.  Needs root (or sudo).
set -eu

PKGS="build-essential autoconf automake libtool pkg-config
libevent-dev libmodbus-dev libconfig-dev libcmocka-dev
libjansson-dev libmosquitto-dev mosquitto mosquitto-clients openssl
python3 python3-pymodbus python3-serial python3-serial-asyncio python3-pyflakes
mbpoll netcat-openbsd socat telnet expect gnuplot-nox mandoc groff-base
chromium chromium-driver python3-selenium prometheus"

missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "deps.sh: these packages are missing and I am not root:$missing" >&2
    exit 1
  fi
fi
echo "deps.sh: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
