#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root), builds tapegrad, and trains the VAE on the bundled digits.
# Pictures and the log land in runs/vae/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/examples/vae train --out runs/vae "$@"
echo "Done. Look at runs/vae/samples.png, runs/vae/reconstructions.png and runs/vae/interpolation.png"
