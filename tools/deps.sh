#!/bin/sh
# Installs the Debian packages lmc needs, only when some are missing.
#   deps.sh build      what building and training need
#   deps.sh test       that, plus what the test suites need
#   deps.sh sanitize   that, plus clang's sanitizer runtimes (make sanitize)
#   deps.sh fuzz       what building needs, plus those runtimes, libFuzzer's among them (make fuzz)
#   deps.sh build mpi  what building needs, plus Open MPI (make deps MPI=1); test includes it
set -e
pkgs="clang lua5.4 liblua5.4-dev check libopenblas-dev libdnnl-dev pkg-config libomp-dev time"
case "$1" in
  test) pkgs="$pkgs python3-torch python3-numpy gnuplot-nox graphviz openmpi-bin libopenmpi-dev" ;;
  sanitize) pkgs="$pkgs python3-torch python3-numpy gnuplot-nox graphviz libclang-rt-dev" ;;
  fuzz) pkgs="$pkgs libclang-rt-dev" ;;
esac
[ "$2" = mpi ] && pkgs="$pkgs openmpi-bin libopenmpi-dev"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
