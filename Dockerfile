# Two images, each with only what its roles run (pyproject.toml, [tool.ticslab.images]):
#   services (the default): one image for the handout's roles, as in the handout; the compose
#     file picks the role with the command (`taskserver`, `balancer`, `client`)
#   dashboard: `ticslab dashboard` (Textual), for `docker-compose run --rm dashboard`
#   docker build -t ticslab .                                    (base python:3.12-slim)
#   docker build --build-arg IMAGE=dashboard -t ticslab-dashboard .
#   docker build --build-arg BASE_IMAGE=python:3.13-slim -t ticslab .
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# `ps` for the handout's `docker exec -it server1 ps aux` (slim images lack procps), and the
# unprivileged user every service runs as.
RUN apt-get update \
    && apt-get install -y --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /bin/bash ticslab

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them: the
# runtime dependencies that [tool.ticslab.images] names for this image, at the versions
# [project] dependencies (or an optional extra) allows (no textual-dev, no psutil, no dev
# extras), every requirement of the extras [tool.ticslab.image-extras] gives this image (the
# services image: `postgres`, psycopg for the task servers' --storage postgresql://...), plus
# the build backend for the step below. A name that is not a dependency stops the build; an
# extra that pyproject.toml does not declare is skipped, saying so in the build's log.
ARG IMAGE=services
COPY pyproject.toml /tmp/ticslab/pyproject.toml
RUN python -c "import re, sys, tomllib; p = tomllib.load(open('/tmp/ticslab/pyproject.toml', 'rb')); \
key = lambda text: re.sub(r'[-_.]+', '-', re.match(r'[A-Za-z0-9._-]+', text).group()).lower(); \
optional = p['project'].get('optional-dependencies', {}); \
declared = {key(r): r for r in sum(optional.values(), []) + p['project']['dependencies']}; \
names = p['tool']['ticslab']['images'][sys.argv[1]]; \
extras = p['tool']['ticslab'].get('image-extras', {}).get(sys.argv[1], []); \
[print(f'no extra {e!r} in pyproject.toml: skipped', file=sys.stderr) for e in extras if e not in optional]; \
print('\n'.join(p['build-system']['requires'] + [declared[key(n)] for n in names] \
+ [r for e in extras for r in optional.get(e, [])]))" "$IMAGE" \
        > /tmp/requirements.txt \
    && cat /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code: installed (not editable) so `ticslab` is on PATH; the sources are not kept.
COPY README.md /tmp/ticslab/README.md
COPY services /tmp/ticslab/services
COPY dashboard /tmp/ticslab/dashboard
RUN pip install --no-deps --no-build-isolation /tmp/ticslab && rm -rf /tmp/ticslab

# The shared tasks live in the folder /app/data (compose mounts one volume there for every task
# server: the atomic rename of each write needs the folder, not a single-file mount);
# /app/tasks.json points at the file so the handout's `cat /app/tasks.json` shows the tasks.
# /app/tls holds the balancer's local CA when TICSLAB_TLS=1 (a volume in docker-compose.yml).
WORKDIR /app
RUN mkdir data tls \
    && echo "[]" > data/tasks.json \
    && ln -s data/tasks.json tasks.json \
    && chown -R ticslab:ticslab /app
ENV TICSLAB_TASKS_FILE=/app/data/tasks.json \
    TICSLAB_HOST=0.0.0.0
USER ticslab

# Every serving role listens on TICSLAB_PORT (5001, 5002 for task servers, 8080 for the
# balancer) and answers /health with 200 only when it can serve. Compose replaces it for the
# client emulators (a check that they run) and turns it off for the dashboard: they serve nothing.
ENV TICSLAB_PORT=8080
# The exec form (no shell between Docker and python): a check that Docker kills on its timeout
# leaves no orphan behind.
HEALTHCHECK --interval=3s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['TICSLAB_PORT'], timeout=2)"]

ENTRYPOINT ["ticslab"]
CMD ["--help"]
