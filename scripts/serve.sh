#!/usr/bin/env bash
# Run the service with its embedded defaults: no database server and no configuration needed.
#
# The catalog is a SQLite file and the secret key a file, both under ./var of the repository
# (VMR_DATA_DIR), migrated on start. Listens on http://127.0.0.1:8080 (VMR_HOST, VMR_PORT).
# Extra arguments go to 'vmrecovery serve' (e.g. --port 9000, --host 0.0.0.0).
#
# On a fresh Debian machine as root it installs python3/python3-venv if missing; the project
# goes into .venv (shared with scripts/test.sh), reinstalled only when pyproject.toml changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=$PWD/.venv
PY=$VENV/bin/python

missing=()
command -v python3 >/dev/null || missing+=(python3)
# Debian's python3 needs python3-venv (it ships ensurepip) to create a virtualenv.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    if ((EUID != 0)); then
        echo "missing packages: ${missing[*]}; install them or run this script as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -d $VENV ]] && ! "$PY" -c 'import sys' 2>/dev/null; then
    rm -rf "$VENV" # its interpreter is gone (python upgraded); rebuild it
fi
[[ -x $PY ]] || python3 -m venv "$VENV"

# An install of the current pyproject.toml, by this script or (with dev tools) by test.sh.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
installed=no
for stamp in "$VENV/.vmr-install.sha256" "$VENV/.vmr-dev-install.sha256"; do
    [[ -f $stamp && $(<"$stamp") == "$want" ]] && installed=yes
done
if [[ $installed == no ]]; then
    echo "installing the project into $VENV ..." >&2
    # Editable: the checkout's code (and its migrations/) is what runs.
    "$PY" -m pip install --disable-pip-version-check -q -e .
    echo "$want" >"$VENV/.vmr-install.sha256"
fi

exec "$VENV/bin/vmrecovery" serve "$@"
