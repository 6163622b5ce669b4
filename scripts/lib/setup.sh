# Sourced by scripts/test, scripts/demo, scripts/bench and scripts/lab: idempotent set-up of
# what mover and its lab need on a fresh Debian machine. Prints progress on stderr only, so a
# caller's stdout stays machine-readable.

MOVER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$MOVER_ROOT/.venv"

_log() { echo "setup: $*" >&2; }

# ensure_apt PKG...: install the Debian packages that are missing (root or sudo).
# APT_INSTALL_OPTS adds options to apt-get install (e.g. --no-install-recommends).
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  _log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ${APT_INSTALL_OPTS:-} "${missing[@]}" >&2
}

# ensure_lab_toolchain: Go and VMware's govmomi sources (vcsim) for the lab.
ensure_lab_toolchain() {
  ensure_apt golang-go golang-github-vmware-govmomi-dev
}

# ensure_objectstore: Ceph's monitor, OSD and RADOS Gateway for scripts/objectstore (no
# manager, no cephadm, no systemd units are used: the script runs the daemons itself).
ensure_objectstore() {
  # Without recommends: ceph-base recommends ceph-mds and a time daemon, neither needed.
  APT_INSTALL_OPTS=--no-install-recommends ensure_apt ceph-mon ceph-osd radosgw
}

# ensure_nbd: nbdkit (the NBD server mover starts per disk to read through VDDK, and the one
# behind `mover serve`; its Python plugin runs scripts/vddk-standin in the lab and the export),
# and the clients the tests and single-file restore use: nbdcopy/nbdinfo (libnbd-bin), nbdfuse
# with FUSE 3, qemu-io/qemu-img (qemu-utils), debugfs and mkfs.ext4 (e2fsprogs). The real vddk
# plugin is not in Debian 12: production installs it with VMware's VDDK (docs/vsphere.md).
ensure_nbd() {
  APT_INSTALL_OPTS=--no-install-recommends ensure_apt nbdkit nbdkit-plugin-python libnbd-bin \
    fuse3 qemu-utils e2fsprogs
  # Debian 12 ships nbdfuse inside libnbd-bin; later releases as a package of its own
  command -v nbdfuse >/dev/null || APT_INSTALL_OPTS=--no-install-recommends ensure_apt nbdfuse
}

# ensure_venv: .venv with mover installed editable and its test extras. Re-installs only when
# pyproject.toml changed since the last install.
ensure_venv() {
  local stamp="$VENV/.mover-installed"
  if [ ! -x "$VENV/bin/python" ]; then
    _log "creating virtualenv $VENV"
    python3 -m venv "$VENV" >&2
  fi
  if [ ! -f "$stamp" ] || [ "$MOVER_ROOT/pyproject.toml" -nt "$stamp" ]; then
    _log "installing mover and its test dependencies into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q -e "$MOVER_ROOT[test]" >&2
    touch "$stamp"
  fi
}

# ensure_bench: what scripts/bench needs besides the venv: the bench extra (matplotlib,
# py-spy, pyinstrument), mkfs/curl/zstd/openssl, and the peers that Debian packages (restic,
# borgbackup; kopia is in no registry reachable here). A peer that fails to install is
# reported by the benchmark, not fatal.
ensure_bench() {
  ensure_apt e2fsprogs curl zstd openssl coreutils time
  ensure_apt restic || _log "restic could not be installed; the benchmark runs without it"
  ensure_apt borgbackup || _log "borgbackup could not be installed; the benchmark runs without it"
  local stamp="$VENV/.mover-bench-installed"
  if [ ! -f "$stamp" ] || [ "$MOVER_ROOT/pyproject.toml" -nt "$stamp" ]; then
    _log "installing mover's test and bench extras into $VENV"
    "$VENV/bin/pip" install -q -e "$MOVER_ROOT[test,bench]" >&2
    touch "$stamp"
  fi
}
