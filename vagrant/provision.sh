#!/usr/bin/env bash
# Installs every system package fw needs on Debian 12 / Ubuntu. Idempotent: packages already
# present are not reinstalled, and apt is only touched when something is missing.
# Used by `make deps` (and so `make test`), by .ci/run, and by the Vagrantfile; `make demo`
# runs it with --demo, which installs only what the demo needs.
set -euo pipefail

PACKAGES=(
  # build: nftnl-sys / mnl-sys link against these
  build-essential pkg-config libnftnl-dev libmnl-dev
  # runtime and test tools: nft client for interop checks, netns lab, conntrack, console e2e
  nftables iproute2 conntrack tmux
  # real clients and servers for lab traffic
  netcat-openbsd socat iperf3 curl openssl dnsutils
  # a real dissector to check the inspection engine against (tests/inspect.rs)
  tshark
  # turning segmentation offload off in a lab namespace (the inspection evasion tests)
  ethtool
  # benchmark scripts: arithmetic and JSON from iperf3
  bc python3
  # Docker discovery tests: the engine, and a static busybox to `docker import` as an image
  docker.io busybox-static
  # Kubernetes node agent tests: a real CRI runtime (its own containerd in a lab namespace),
  # the CNI bridge plugin for its pods, and protoc for the CRI gRPC client (k8s-cri)
  containerd containernetworking-plugins protobuf-compiler
)

# `--demo` (what `make demo` uses): only what building fw and the demo's namespace lab need.
if [ "${1:-}" = --demo ]; then
  PACKAGES=(
    build-essential pkg-config libnftnl-dev libmnl-dev
    nftables iproute2
    # the lab's listeners, traffic generators and probes (tests/traffic.sh, tests/demo.sh)
    netcat-openbsd socat
  )
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ! command -v cargo >/dev/null && [ ! -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  echo "provision.sh: warning: no Rust toolchain; install Rust >= 1.85 with rustup (the Vagrantfile does)" >&2
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "provision.sh: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "provision.sh: missing ${missing[*]}; run as root to install them (it uses apt-get)" >&2
  exit 1
fi

echo "provision.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark's package asks whether non-root users may capture: answer no, never prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "provision.sh: done"
