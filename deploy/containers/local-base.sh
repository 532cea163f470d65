#!/usr/bin/env bash
# Makes the base image debian:bookworm-slim locally, for a machine that reaches a Debian
# mirror but no container registry (the images' Containerfiles then build unchanged, with
# --pull=never). Does nothing when the image is there already.
#
#   deploy/containers/local-base.sh            # podman, or CONTAINER_ENGINE=docker
#
# Needs root and debootstrap (apt-get install debootstrap). The image trusts the same extra
# certificate authorities as this host (/usr/local/share/ca-certificates), so builds behind
# an intercepting proxy reach Maven Central and PyPI as the host does.
set -euo pipefail

engine=${CONTAINER_ENGINE:-$(command -v podman > /dev/null && echo podman || echo docker)}
image=docker.io/library/debian:bookworm-slim
if "$engine" image inspect "$image" > /dev/null 2>&1; then
    echo "$image is there"
    exit 0
fi
command -v debootstrap > /dev/null || { echo "local-base.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }

# The mirror apt uses here, else Debian's own.
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2> /dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "making $image with debootstrap from $mirror (about a minute)"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | "$engine" import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["bash"]' - "$image" > /dev/null
echo "$image made"
