#!/usr/bin/env bash
# Makes sure Debian's Fashion-MNIST IDX files are present (package dataset-fashion-mnist).
set -euo pipefail
DIR="${JAXSSL_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
missing=0
for f in "${files[@]}"; do [ -s "$DIR/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
if [ "$DIR" = /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "Installing Debian package dataset-fashion-mnist ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
    exit 0
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
    exit 0
  fi
fi
cat >&2 <<MSG
Fashion-MNIST IDX files not found in $DIR.
Install them with:   sudo apt-get install dataset-fashion-mnist
or put the four files (${files[*]}) in a directory and set JAXSSL_FMNIST_DIR=/that/dir.
MSG
exit 1
