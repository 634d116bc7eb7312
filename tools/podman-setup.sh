#!/usr/bin/env bash
# Called by tools/system-deps.sh: what `make image` and `make image-test` need on a machine
# without a Docker engine (CI runs on a fresh one as root). Installs podman and its helpers
# when missing, and works around a sandbox that refuses podman's default ulimits by writing
# /etc/containers/containers.conf, only when the workaround is needed and no such file exists.
# Quiet when everything is already in place; a machine where `docker info` works needs nothing.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi

need=()
# catatonit: the pause process of a pod (podman pod create).
for pkg in podman buildah runc fuse-overlayfs slirp4netns uidmap debootstrap catatonit; do
  case $pkg in
    uidmap) bin=newuidmap ;;
    *) bin=$pkg ;;
  esac
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages for the image: ${need[*]}; install them with:" \
      "sudo apt-get install --no-install-recommends ${need[*]}" >&2
    exit 1
  fi
  echo "installing ${need[*]} (the image is built and tested with podman) ..."
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi

# Podman's default ulimits (RLIMIT_NOFILE above the hard limit a sandbox allows) make every
# container fail with "setrlimit RLIMIT_NOFILE: Operation not permitted". Try one container
# from an empty image; only when that is the failure, and no system config exists, write one.
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ] && [ "$(id -u)" -eq 0 ]; then
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  # The probe: /bin/true with the libraries it links, imported as an image.
  mkdir -p "$probe/root/bin"
  cp /bin/true "$probe/root/bin/true"
  while read -r lib; do
    [ -f "$lib" ] || continue
    mkdir -p "$probe/root$(dirname "$lib")"
    cp -L "$lib" "$probe/root$lib"
  done < <(ldd /bin/true | grep -o '/[^ ]*')
  tar -C "$probe/root" -c . | podman import -q - localhost/tollgate-ulimit-probe >/dev/null
  out=$(podman --runtime runc run --rm --network=none localhost/tollgate-ulimit-probe /bin/true 2>&1) || {
    if grep -qi 'rlimit' <<<"$out"; then
      mkdir -p /etc/containers
      printf '%s\n' \
        '# Written by tollgate tools/podman-setup.sh: this machine refuses podman default ulimits.' \
        '[containers]' 'default_ulimits = []' >"$conf"
      echo "wrote $conf (default_ulimits = []): podman's default ulimits are not allowed here"
    else
      echo "podman-setup: a test container failed, not because of ulimits:" >&2
      echo "$out" >&2
    fi
  }
  podman rmi -f localhost/tollgate-ulimit-probe >/dev/null 2>&1 || true
fi
