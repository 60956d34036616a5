#!/usr/bin/env bash
# Build the Dockerfile's image for real without a Docker engine or an image registry, then run it:
#   1. debootstrap a minimal Debian bookworm and commit it as debian:bookworm-slim (the Dockerfile's FROM);
#   2. buildah build the Dockerfile (its RUN steps reach Debian and PyPI over the host's network);
#   3. in the built image, as its non-root user: devourer --version, a replay of the sample capture, and a
#      live capture with the two capabilities on a veth pair into a network namespace the script creates.
# Needs root and Debian's buildah and debootstrap (apt-get install buildah debootstrap).
# Usage: sudo bash scripts/build_image.sh [TAG]        (default TAG: devourer:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-devourer:latest}
BASE=docker.io/library/debian:bookworm-slim
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}   # works on any file system, also inside a VM or container
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    ROOTFS=$(mktemp -d /var/tmp/devourer-rootfs.XXXXXX)
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "== debootstrap bookworm (minbase) into $ROOTFS"
    debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
    # what the official slim image leaves out: apt lists, caches, docs
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/doc/* \
           "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    cp -a "$ROOTFS"/. "$mnt"/
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$ctr"
    buildah commit --quiet "$ctr" "$BASE" >/dev/null
    buildah rm "$ctr" >/dev/null
    rm -rf "$ROOTFS"
    trap - EXIT
    echo "== base image $BASE committed"
fi

# The host's CA bundle goes in for the build's downloads (a TLS-inspecting proxy's CA is only there).
echo "== buildah build -t $TAG"
buildah build --pull=never --network host --layers=false \
    --volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
    --build-arg PIP_CA_BUNDLE=/run/host-ca.crt \
    -t "$TAG" -f Dockerfile . >/dev/null

echo "== running the image"
ctr=$(buildah from --pull=never "$TAG")
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$TAG")
echo "image user: $user"
buildah run --user "$user" "$ctr" -- devourer --version
buildah run --user "$user" "$ctr" -- devourer capture -r /opt/devourer/share/http.pcap

echo "== live capture in the image as $user with --cap-add NET_RAW/NET_ADMIN, on a veth pair of our own"
NS=dvimg$$; IF=dvimg$$a
cleanup() { ip link del "$IF" 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; buildah rm "$ctr" >/dev/null 2>&1 || true; }
trap cleanup EXIT
ip netns add "$NS"
ip link add "$IF" type veth peer name "${IF%a}b" && ip link set "${IF%a}b" netns "$NS"
ip addr add 10.254.79.1/30 dev "$IF" && ip link set "$IF" up
ip netns exec "$NS" ip addr add 10.254.79.2/30 dev "${IF%a}b" && ip netns exec "$NS" ip link set "${IF%a}b" up
out=$(mktemp)
buildah run --network host --user "$user" --cap-add CAP_NET_RAW --cap-add CAP_NET_ADMIN "$ctr" -- \
    devourer capture -i "$IF" >"$out" 2>&1 &
inside="^/opt/devourer/bin/python3 /opt/devourer/bin/devourer capture -i $IF\$"  # devourer itself, not buildah
for _ in $(seq 100); do pgrep -f "$inside" >/dev/null && break; sleep 0.1; done
sleep 3  # its capture process opens the interface
ip netns exec "$NS" ping -c 3 -i 0.2 10.254.79.1 >/dev/null
sleep 1
pkill -TERM -f "$inside"
wait || true
echo "ping flows from the namespace: $(grep -c '"protocol":"icmp4","src":{"addr":"10.254.79.2"' "$out" || true)"
tail -1 "$out"
rm -f "$out"
echo "== $TAG built and ran; size: $(buildah images --format '{{.Size}}' "$TAG")"
