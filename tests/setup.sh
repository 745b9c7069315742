#!/usr/bin/env bash
# Everything the tests need, into the active Python environment: dfnet with its test extra (the
# newest pyspark, MLflow, Pillow, the notebook runner, playwright), and Debian's chromium, which
# tests/test_report_browser.py drives through playwright (never a browser playwright downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e '.[test]'
if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "tests/setup.sh: installing Debian's chromium for tests/test_report_browser.py"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
