#!/usr/bin/env bash
# Builds the one tollgate image with whatever engine works here, from the same Dockerfile:
#
#   tools/image.sh build    make image:      the image (IMAGE, default tollgate:dev) and its
#                                            SBOM in .image/sbom.json
#   tools/image.sh base     make image-base: localhost/debian-python:3.11-bookworm from
#                                            Debian's packages (debootstrap), kept once made
#   tools/image.sh engine   the engine command line the build uses (for tests), or exit 3
#
# Engine: docker when `docker info` works, else podman (with `--runtime runc` when the
# default runtime is crun and the cgroups are a v1/v2 hybrid, which crun refuses).
# Base: PYTHON_IMAGE if set; else the official python:3.11-slim-bookworm when it is present or
# can be pulled; else the Debian-made base (Python 3.11.2 from Debian, not the official image's
# build), which this script says it used and why.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-tollgate:dev}
OFFICIAL=python:3.11-slim-bookworm
DEBIAN_BASE=localhost/debian-python:3.11-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
OUT=.image

say() { echo "image: $*" >&2; }

# shellcheck disable=SC2016 # Python, not shell
SBOM_PY='
import importlib.metadata as md, json, platform, sys
pkgs = sorted(({"name": d.metadata["Name"], "version": d.version} for d in md.distributions()),
              key=lambda p: p["name"].lower())
json.dump({"image": sys.argv[1], "base": sys.argv[2], "revision": sys.argv[3],
           "python": platform.python_version(), "packages": pkgs}, sys.stdout, indent=1)
print()
' 

engine=()
detect_engine() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=(docker)
    return 0
  fi
  if ! command -v podman >/dev/null 2>&1; then
    say "neither a working docker (docker info fails) nor podman; run \`make system-deps\` as root"
    return 3
  fi
  engine=(podman)
  local runtime
  runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null || true)
  # Hybrid cgroups: a v1 tmpfs at /sys/fs/cgroup with the v2 hierarchy under unified/.
  if [ "$runtime" = crun ] && [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] \
    && [ -d /sys/fs/cgroup/unified ] && command -v runc >/dev/null 2>&1; then
    engine+=(--runtime runc)
  fi
}

exists() { "${engine[@]}" image inspect "$1" >/dev/null 2>&1; }

make_base() {
  if exists "$DEBIAN_BASE"; then
    say "$DEBIAN_BASE exists: kept (remove it to make it again)"
    return 0
  fi
  command -v debootstrap >/dev/null 2>&1 || { say "debootstrap is missing; run \`make system-deps\`"; return 1; }
  [ "$(id -u)" -eq 0 ] || { say "debootstrap needs root to make $DEBIAN_BASE"; return 1; }
  local root start
  root=$(mktemp -d)
  start=$SECONDS
  say "making $DEBIAN_BASE from Debian bookworm's packages ($MIRROR) with debootstrap ..."
  if ! debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$MIRROR" >"$root.log" 2>&1; then
    tail -n 20 "$root.log" >&2
    rm -rf "$root" "$root.log"
    return 1
  fi
  # What the image does not need at run time: apt's lists and caches, docs, man pages.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  tar -C "$root" -c . | "${engine[@]}" import -q \
    --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$DEBIAN_BASE" >/dev/null
  rm -rf "$root" "$root.log"
  say "made $DEBIAN_BASE in $((SECONDS - start)) s ($("${engine[@]}" run --rm "$DEBIAN_BASE" python3 -V))"
}

pick_base() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then
    base=$PYTHON_IMAGE
    return 0
  fi
  base=$OFFICIAL
  exists "$OFFICIAL" && return 0
  local why
  if why=$(timeout 120 "${engine[@]}" pull -q "$OFFICIAL" 2>&1); then
    return 0
  fi
  why=$(tail -n 1 <<<"$why")
  say "cannot pull $OFFICIAL (${why:-timed out}):"
  say "building on $DEBIAN_BASE, made from Debian's packages: Python 3.11.2 from Debian,"
  say "not the official image's Python; the code, the lock and the user are the same"
  make_base
  base=$DEBIAN_BASE
}

build() {
  local base version revision source start
  pick_base
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' services/tollgate_common/__init__.py)
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$revision" != unknown ] && [ -n "$(git status --porcelain -- Dockerfile requirements.lock services proto/gen/python 2>/dev/null)" ]; then
    revision="$revision-dirty"
  fi
  source=$(git remote get-url origin 2>/dev/null || echo "https://github.com/tollgate/tollgate")
  local args=(build --network=host -t "$IMAGE"
    --build-arg "PYTHON_IMAGE=$base"
    --label "org.opencontainers.image.version=$version"
    --label "org.opencontainers.image.revision=$revision"
    --label "org.opencontainers.image.source=$source")
  # A TLS proxy's CA may be only in the host's bundle: podman (buildah) mounts it into every
  # RUN; docker build has no volumes and uses the base image's bundle.
  if [ "${engine[0]}" = podman ] && [ -f "$CA_BUNDLE" ]; then
    args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  start=$SECONDS
  say "${engine[*]} ${args[*]} ."
  "${engine[@]}" "${args[@]}" .
  say "built $IMAGE on $base in $((SECONDS - start)) s, version $version, revision $revision"
  mkdir -p "$OUT"
  # The SBOM: every Python distribution in the image (pip itself is not kept there), as
  # `pip list --format=json` would list it, read inside the image by its own interpreter.
  "${engine[@]}" run --rm --network=none --read-only --entrypoint python "$IMAGE" -c "$SBOM_PY" \
    "$IMAGE" "$base" "$revision" >"$OUT/sbom.json.tmp"
  mv "$OUT/sbom.json.tmp" "$OUT/sbom.json"
  local size
  size=$("${engine[@]}" image inspect --format '{{.Size}}' "$IMAGE")
  say "size $((size / 1000000)) MB ($size bytes); SBOM in $OUT/sbom.json"
}

case ${1:-build} in
  engine)
    detect_engine
    echo "${engine[*]}"
    ;;
  base)
    detect_engine
    make_base
    ;;
  build)
    detect_engine
    build
    ;;
  *)
    echo "usage: $0 [build|base|engine]" >&2
    exit 2
    ;;
esac
