#!/usr/bin/env bash
# Starts, on loopback only, the real services the end-to-end tests use for a shared OCI stage
# cache and a second container engine:
#   - a Docker registry (Debian's docker-registry), storage in WORKDIR/registry;
#   - a second Docker daemon in a privileged container (Docker-in-Docker), with its own storage;
#   - rootful podman, with a containers.conf that works here and the BASE_IMAGEs loaded;
#   - a PostgreSQL server that takes only TLS on TCP (Debian's postgresql, a self-signed
#     certificate), its cluster in /var/tmp where the postgres user can reach it; and libpq-dev,
#     which the tests build a host psycopg2 against.
# Idempotent: what already runs is reused. Must run as root (it installs Debian packages). The
# ports and the container's name are derived from WORKDIR, so suites of two checkouts coexist.
#
# usage: tests/services.sh registry WORKDIR             the registry
#        tests/services.sh dind WORKDIR BASE_IMAGE...   the second daemon, made from the first
#                                                       BASE_IMAGE and holding them all
#        tests/services.sh podman WORKDIR BASE_IMAGE... podman's configuration, the BASE_IMAGEs
#                                                       loaded, and none of this project's images
#        tests/services.sh postgres WORKDIR             the PostgreSQL server
#        tests/services.sh skopeo                       skopeo, installed if missing
#        tests/services.sh stop-registry WORKDIR        stop the registry (its storage stays)
#        tests/services.sh stop-dind WORKDIR            remove the dind container and its volumes
#
# stdout holds only KEY=VALUE lines: REGISTRY, REGISTRY_PID, DIND, CONTAINERS_CONF, POSTGRES
# (a libpq connection string), SKOPEO.
# Everything else goes to stderr.
set -euo pipefail

# Ports and the container's name follow from the work directory (set by `for_workdir`), so that
# two checkouts' suites on one machine do not meet.
REGISTRY_PORT=
DIND_PORT=
DIND_NAME=
POSTGRES_PORT=
POSTGRES_DIR=
for_workdir() {
    local n
    n=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
    REGISTRY_PORT=$((20000 + n % 10000))
    DIND_PORT=$((30000 + n % 10000))
    DIND_NAME=python-fips-test-dind-$((n % 100000))
    POSTGRES_PORT=$((40000 + n % 10000))
    POSTGRES_DIR=/var/tmp/python-fips-test-postgres-$((n % 100000))
}

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }
usage() { die "usage: $0 registry WORKDIR | dind WORKDIR BASE_IMAGE... | podman WORKDIR BASE_IMAGE... | postgres WORKDIR | skopeo | stop-registry WORKDIR | stop-dind WORKDIR"; }

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

# Linux capability names by number, to name the ones this machine withholds.
CAPS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
      NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
      SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
      SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
      WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)

# Sets privileged_flags to what makes the dind container privileged. `docker run --privileged`
# asks for every capability and fails ("unable to apply caps") where the capability bounding
# set lacks some (SYS_RESOURCE on some sandboxes); there the same privileges are granted one by
# one, less the missing capabilities, and the entry point makes /sys and the cgroups writable.
set_privileged_flags() {
    local bnd last i missing=()
    bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
    last=$(cat /proc/sys/kernel/cap_last_cap)
    for i in "${!CAPS[@]}"; do
        (( i > last || bnd >> i & 1 )) || missing+=("${CAPS[$i]}")
    done
    privileged_flags=(--privileged)
    [ ${#missing[@]} = 0 ] && return
    log "the capability bounding set lacks ${missing[*]}: granting the privileges of --privileged one by one instead"
    privileged_flags=(--cap-add ALL --security-opt seccomp=unconfined --security-opt apparmor=unconfined
                      --security-opt systempaths=unconfined --device-cgroup-rule "a *:* rwm")
    for i in "${missing[@]}"; do privileged_flags+=(--cap-drop "$i"); done
}

start_dind() {
    local base=$1 base_id ctx tag current
    base_id=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null) \
        || die "base image $base is missing: make it with \`cargo xtask base-image --suite bookworm\`"
    # The base image made by base-image carries the machine's mirror in its sources.list.
    ctx=$(mktemp -d)
    cat >"$ctx/Dockerfile" <<EOF
FROM $base
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io ca-certificates iptables tini \\
 && rm -rf /var/lib/apt/lists/*
COPY entrypoint.sh /usr/local/bin/dind-entrypoint
# The daemon's storage is the container's own volume, not the outer engine's overlay.
VOLUME /var/lib/docker
ENTRYPOINT ["tini", "--", "sh", "/usr/local/bin/dind-entrypoint"]
EOF
    cat >"$ctx/entrypoint.sh" <<'EOF'
set -e
# Writable /sys and cgroup hierarchies (already so under a real --privileged).
mount -o remount,rw /sys
for d in /sys/fs/cgroup /sys/fs/cgroup/*/; do
    if mountpoint -q "$d"; then mount -o remount,bind,rw "$d"; fi
done
# --tls=false states the intent to listen without TLS (newer dockerd refuse it otherwise).
# Nested containers get this container's MTU (the outer engine may use less than 1500).
exec dockerd --host tcp://0.0.0.0:2375 --tls=false --storage-driver vfs \
    --mtu "$(cat /sys/class/net/eth0/mtu)"
EOF
    tag=python-fips-test-dind:$(cat "$ctx/Dockerfile" "$ctx/entrypoint.sh" - <<<"$base_id" | sha256sum | cut -c1-12)
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
        log "building $tag"
        docker build -q -t "$tag" "$ctx" >&2 || { rm -rf "$ctx"; die "cannot build $tag"; }
    fi
    rm -rf "$ctx"
    current=$(docker inspect --format '{{.State.Running}} {{.Config.Image}}' "$DIND_NAME" 2>/dev/null || true)
    if [ "$current" != "true $tag" ]; then
        if [ -n "$current" ]; then docker rm --force --volumes "$DIND_NAME" >/dev/null; fi
        if port_open "$DIND_PORT"; then
            die "port 127.0.0.1:$DIND_PORT is taken by something else:
$(ss -ltnp "sport = :$DIND_PORT" 2>/dev/null || true)"
        fi
        set_privileged_flags
        log "starting container $DIND_NAME"
        docker run -d --name "$DIND_NAME" "${privileged_flags[@]}" -p "127.0.0.1:$DIND_PORT:2375" "$tag" >/dev/null
    else
        log "container $DIND_NAME already runs"
    fi
    local i
    for i in $(seq 120); do
        if DOCKER_HOST=tcp://127.0.0.1:$DIND_PORT docker version >/dev/null 2>&1; then break; fi
        if [ "$(docker inspect --format '{{.State.Running}}' "$DIND_NAME" 2>/dev/null)" != true ] \
            || [ "$i" = 120 ]; then
            die "the dind daemon does not run here ($DIND_NAME); its log:
$(docker logs --tail 30 "$DIND_NAME" 2>&1)"
        fi
        sleep 0.5
    done
    # The base image, as this machine has it: the same id gives the same builder key here and
    # there. Saved and loaded through the client, as nothing of this filesystem is there.
    local image
    for image in "$@"; do
        base_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) \
            || die "base image $image is missing: \`cargo xtask base-image\` makes it"
        if [ "$(DOCKER_HOST=tcp://127.0.0.1:$DIND_PORT docker image inspect --format '{{.Id}}' "$image" 2>/dev/null)" != "$base_id" ]; then
            log "loading $image into $DIND_NAME"
            docker save "$image" | DOCKER_HOST=tcp://127.0.0.1:$DIND_PORT docker load >&2
        fi
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
    local dir=$1/podman base=$2 docker_id podman_id
    command -v podman >/dev/null 2>&1 || apt_install podman
    mkdir -p "$dir"
    # Rootful podman here fails with "error setting rlimit type 6/7" on its default ulimits.
    printf '[containers]\ndefault_ulimits = []\n' >"$dir/containers.conf"
    export CONTAINERS_CONF=$dir/containers.conf
    # The same image as docker's (podman shows its id without "sha256:"); podman stores a short
    # name loaded from a docker archive as localhost/NAME, which still answers to NAME.
    for base in "${@:2}"; do
        docker_id=$(docker image inspect --format '{{.Id}}' "$base") \
            || die "base image $base is missing: \`cargo xtask base-image\` makes it"
        podman_id=$(podman image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)
        if [ "sha256:$podman_id" != "$docker_id" ]; then
            log "loading $base into podman"
            docker save "$base" | podman load >&2
        fi
    done
    # Like a new machine, podman holds none of this project's images (builders, runtime images).
    local images
    images=$(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/python-fips' || true)
    if [ -n "$images" ]; then
        log "removing this project's images from podman"
        # shellcheck disable=SC2086 # one image name per word
        podman rmi --force $images >/dev/null
    fi
    echo "CONTAINERS_CONF=$CONTAINERS_CONF"
}

# --- PostgreSQL ------------------------------------------------------------------------------

start_postgres() {
    local dir=$POSTGRES_DIR bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
        apt_install postgresql
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    command -v pg_config >/dev/null 2>&1 || apt_install libpq-dev
    id postgres >/dev/null 2>&1 || die "the postgresql package made no postgres user"
    local as_postgres=(runuser -u postgres --)
    if "${as_postgres[@]}" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 \
        && port_open "$POSTGRES_PORT"; then
        log "PostgreSQL already runs ($dir)"
    else
        if port_open "$POSTGRES_PORT"; then
            die "port 127.0.0.1:$POSTGRES_PORT is taken by something that is not the server of $dir:
$(ss -ltnp "sport = :$POSTGRES_PORT" 2>/dev/null || true)"
        fi
        rm -rf "$dir"
        mkdir -p "$dir"
        chown postgres: "$dir"
        log "initializing a cluster in $dir/data"
        "${as_postgres[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 >&2
        # A self-signed RSA 2048 certificate: the clients ask for TLS (sslmode=require), not for
        # the server's identity.
        "${as_postgres[@]}" openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
            -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null
        chmod 600 "$dir/server.key"
        cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $POSTGRES_PORT
unix_socket_directories = '$dir'
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
EOF
        # TCP connections only over TLS; the local socket for the tests' own checks.
        printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"
        log "starting PostgreSQL on 127.0.0.1:$POSTGRES_PORT (log: $dir/log)"
        "${as_postgres[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start 9>&- >&2 \
            || die "PostgreSQL did not start:
$(tail -n 20 "$dir/log")"
    fi
    echo "POSTGRES=host=127.0.0.1 port=$POSTGRES_PORT user=postgres dbname=postgres"
}

# --- main ------------------------------------------------------------------------------------

command=${1:-}
if [ "$command" = skopeo ] && [ $# = 1 ]; then
    lock
    command -v skopeo >/dev/null 2>&1 || apt_install skopeo
    echo "SKOPEO=$(command -v skopeo)"
    exit 0
fi
case $command in
    registry | stop-registry | stop-dind | postgres) [ $# = 2 ] || usage ;;
    dind | podman) [ $# -ge 3 ] || usage ;;
    *) usage ;;
esac
mkdir -p "$2"
workdir=$(cd "$2" && pwd)
for_workdir "$workdir"
lock
case $command in
    registry) start_registry "$workdir" ;;
    stop-registry) stop_registry "$workdir" ;;
    dind) start_dind "${@:3}" ;;
    stop-dind) stop_dind ;;
    podman) start_podman "$workdir" "${@:3}" ;;
    postgres) start_postgres ;;
esac
