#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright (playwright install cannot download here).
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "Could not install chromium; browser tests will be skipped." >&2
else
  echo "No /usr/bin/chromium and no root to install it; browser tests will be skipped." >&2
fi
exit 0
