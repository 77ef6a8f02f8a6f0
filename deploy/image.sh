#!/usr/bin/env bash
# Builds fw's container image offline: the two binaries and exactly the shared libraries
# they load (from ldd), nothing pulled from a registry, `docker import`ed with fw-daemon as
# the entrypoint. The image has no shell and no package manager: the node agent and the
# console are all it holds.
# Usage: deploy/image.sh [BIN_DIR] [TAG]   (default target/release, fw:<version>)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release}"
for b in fw-daemon fw-tui; do
  [ -x "$bin/$b" ] || { echo "deploy/image.sh: $bin/$b not built (cargo build --release -p fw-daemon -p fw-tui)" >&2; exit 1; }
done
version=$("$bin/fw-daemon" --version | awk '{print $2}')
tag="${2:-fw:$version}"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/fw/rules" "$root/run/fw" "$root/var/lib/fw" "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0755 "$bin/fw-daemon" "$bin/fw-tui" "$root/usr/local/bin/"
# Each library at the path the loader looks for it (ldd prints it: /lib/x86_64-linux-gnu/...,
# and the loader itself as /lib64/ld-linux-x86-64.so.2), copied through any symlink.
ldd "$bin/fw-daemon" "$bin/fw-tui" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
# Names for the uid and the socket's groups (the daemon looks groups up by name).
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nfw:x:990:\nfw-operator:x:991:\n' >"$root/etc/group"
tar -C "$root" --owner=0 --group=0 -cf - . |
  docker import \
    --change 'ENTRYPOINT ["/usr/local/bin/fw-daemon"]' \
    --change 'CMD ["run", "--rules", "/etc/fw/rules"]' \
    --change "LABEL org.opencontainers.image.title=fw org.opencontainers.image.version=$version" \
    - "$tag" >/dev/null
echo "$tag"
