#!/usr/bin/env bash
# Starts, on loopback only, the real services the end-to-end tests use for a shared OCI stage
# cache and a second container engine:
#   - a Docker registry (Debian's docker-registry) on 127.0.0.1:5117, storage in WORKDIR/registry;
#   - a second Docker daemon in a privileged container (Docker-in-Docker) on 127.0.0.1:23750;
#   - rootful podman, with a containers.conf that works here and BASE_IMAGE loaded.
# Idempotent: what already runs is reused. Must run as root (it installs Debian packages).
#
# usage: tests/services.sh WORKDIR BASE_IMAGE    start whatever is not running yet
#        tests/services.sh stop-registry WORKDIR  stop the registry (its storage stays)
#        tests/services.sh stop-dind              remove the dind container and its volumes
#
# stdout holds only KEY=VALUE lines: REGISTRY, REGISTRY_PID, DIND, CONTAINERS_CONF.
# Everything else goes to stderr.
set -euo pipefail

REGISTRY_PORT=5117
DIND_PORT=23750
DIND_NAME=python-fips-test-dind

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }
usage() { die "usage: $0 WORKDIR BASE_IMAGE | $0 stop-registry WORKDIR | $0 stop-dind"; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_updated=
apt_install() {
    [ "$(id -u)" = 0 ] || die "$* missing and not root: install with \`apt-get install $*\`"
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >&2
        apt_updated=1
    fi
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# One caller at a time: the services (ports, container, apt) are machine-wide. The lock's fd is
# closed for the background registry so that it does not hold the lock.
lock() {
    exec 9>"${TMPDIR:-/tmp}/python-fips-test-services.lock"
    flock -w 900 9 || die "another tests/services.sh holds the lock"
}

# --- registry --------------------------------------------------------------------------------

# Prints the pid of the registry serving WORKDIR/registry/config.yml, if it runs.
registry_pid() {
    local dir=$1 pid
    pid=$(cat "$dir/pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "docker-registry serve $dir/config.yml" || return 1
    echo "$pid"
}

start_registry() {
    local dir=$1/registry pid
    command -v docker-registry >/dev/null 2>&1 || apt_install docker-registry
    mkdir -p "$dir/data"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
    if pid=$(registry_pid "$dir") && curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null; then
        log "registry already runs (pid $pid)"
    else
        if port_open "$REGISTRY_PORT"; then
            die "port 127.0.0.1:$REGISTRY_PORT is taken by something that is not the registry of $dir:
$(ss -ltnp "sport = :$REGISTRY_PORT" 2>/dev/null || true)"
        fi
        log "starting docker-registry on 127.0.0.1:$REGISTRY_PORT (log: $dir/log)"
        setsid nohup docker-registry serve "$dir/config.yml" </dev/null >>"$dir/log" 2>&1 9>&- &
        pid=$!
        echo "$pid" >"$dir/pid"
        local i
        for i in $(seq 100); do
            curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null && break
            kill -0 "$pid" 2>/dev/null || die "docker-registry exited:
$(tail -n 20 "$dir/log")"
            [ "$i" = 100 ] && die "docker-registry did not answer within 20 s:
$(tail -n 20 "$dir/log")"
            sleep 0.2
        done
    fi
    echo "REGISTRY=127.0.0.1:$REGISTRY_PORT"
    echo "REGISTRY_PID=$pid"
}

stop_registry() {
    local dir=$1/registry pid i
    if pid=$(registry_pid "$dir"); then
        log "stopping docker-registry (pid $pid)"
        kill "$pid"
        for i in $(seq 100); do
            if ! kill -0 "$pid" 2>/dev/null && ! port_open "$REGISTRY_PORT"; then
                break
            fi
            [ "$i" = 50 ] && kill -KILL "$pid" 2>/dev/null
            [ "$i" = 100 ] && die "docker-registry (pid $pid) did not stop"
            sleep 0.2
        done
    else
        log "no registry of $dir runs"
    fi
    rm -f "$dir/pid"
}

# --- second Docker daemon (Docker-in-Docker) -------------------------------------------------

start_dind() {
    local base=$1 base_id ctx tag current
    base_id=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null) \
        || die "base image $base is missing: make it with \`cargo xtask base-image --debootstrap bookworm\`"
    # The base image made by debootstrap carries the machine's mirror in its sources.list.
    ctx=$(mktemp -d)
    cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io ca-certificates iptables tini \\
 && rm -rf /var/lib/apt/lists/*
# The daemon's storage is the container's own volume, not the outer engine's overlay.
VOLUME /var/lib/docker
# Nested containers get the MTU of this container's link (the outer engine may use < 1500).
# --tls=false states the intent to listen without TLS (needed by newer dockerd).
ENTRYPOINT ["tini", "--", "sh", "-c", "exec dockerd --host tcp://0.0.0.0:2375 --tls=false --storage-driver vfs --mtu \$(cat /sys/class/net/eth0/mtu)"]
EOF
    tag=python-fips-test-dind:$( { cat "$ctx/Dockerfile"; echo "$base_id"; } | sha256sum | cut -c1-12)
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
        log "building $tag"
        docker build -q -t "$tag" "$ctx" >&2 || { rm -rf "$ctx"; die "cannot build $tag"; }
    fi
    rm -rf "$ctx"
    current=$(docker inspect --format '{{.State.Running}} {{.Config.Image}}' "$DIND_NAME" 2>/dev/null || true)
    if [ "$current" != "true $tag" ]; then
        [ -n "$current" ] && docker rm --force --volumes "$DIND_NAME" >/dev/null
        port_open "$DIND_PORT" && die "port 127.0.0.1:$DIND_PORT is taken by something else:
$(ss -ltnp "sport = :$DIND_PORT" 2>/dev/null || true)"
        log "starting container $DIND_NAME"
        docker run -d --name "$DIND_NAME" --privileged -p "127.0.0.1:$DIND_PORT:2375" "$tag" >/dev/null
    else
        log "container $DIND_NAME already runs"
    fi
    local i
    for i in $(seq 120); do
        DOCKER_HOST=tcp://127.0.0.1:$DIND_PORT docker version >/dev/null 2>&1 && break
        if [ "$(docker inspect --format '{{.State.Running}}' "$DIND_NAME" 2>/dev/null)" != true ] \
            || [ "$i" = 120 ]; then
            die "the dind daemon does not run here ($DIND_NAME); its log:
$(docker logs --tail 30 "$DIND_NAME" 2>&1)"
        fi
        sleep 0.5
    done
    echo "DIND=tcp://127.0.0.1:$DIND_PORT"
}

stop_dind() {
    if docker inspect "$DIND_NAME" >/dev/null 2>&1; then
        log "removing container $DIND_NAME"
        docker rm --force --volumes "$DIND_NAME" >/dev/null
    else
        log "no container $DIND_NAME"
    fi
}

# --- podman ----------------------------------------------------------------------------------

start_podman() {
    local dir=$1/podman base=$2
    command -v podman >/dev/null 2>&1 || apt_install podman
    mkdir -p "$dir"
    # Rootful podman here fails with "error setting rlimit type 6/7" on its default ulimits.
    printf '[containers]\ndefault_ulimits = []\n' >"$dir/containers.conf"
    export CONTAINERS_CONF=$dir/containers.conf
    if ! podman image exists "$base"; then
        log "loading $base into podman"
        docker save "$base" | podman load >&2
    fi
    echo "CONTAINERS_CONF=$CONTAINERS_CONF"
}

# --- main ------------------------------------------------------------------------------------

case ${1:-} in
    stop-registry)
        [ $# = 2 ] || usage
        lock
        stop_registry "$(cd "$2" && pwd)"
        ;;
    stop-dind)
        [ $# = 1 ] || usage
        lock
        stop_dind
        ;;
    "" | -*) usage ;;
    *)
        [ $# = 2 ] || usage
        mkdir -p "$1"
        workdir=$(cd "$1" && pwd)
        lock
        start_registry "$workdir"
        start_dind "$2"
        start_podman "$workdir" "$2"
        ;;
esac
