# Shared by scripts/demo, scripts/test and scripts/bench: install what is missing.
# Sourced, not run. Every step is idempotent and fails loudly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

ensure_beanstalkd() {
  if command -v beanstalkd >/dev/null 2>&1 || [ -x /usr/bin/beanstalkd ]; then return; fi
  say "installing beanstalkd (Debian package)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq beanstalkd >/dev/null
  command -v beanstalkd >/dev/null || { echo "beanstalkd did not install" >&2; exit 1; }
}

# Debian's Chromium, for the dashboard's browser tests (Playwright drives it by path: its
# own browser download is not used). Loud when it cannot be installed.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  say "installing chromium (Debian package, for the browser tests)"
  if ! { as_root apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null; }; then
    say "WARNING: chromium did not install: the browser tests will skip (and fail in CI)"
    return 0
  fi
  [ -x /usr/bin/chromium ] || say "WARNING: chromium installed but /usr/bin/chromium is missing"
}

# ensure_venv EXTRAS: a .venv with the package (editable) and the given extras.
ensure_venv() {
  local extras="$1" stamp
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  stamp=".venv/.bystroq-$extras-$(cat setup.cfg pyproject.toml | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    say "installing bystroq[$extras] into .venv"
    .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
}
