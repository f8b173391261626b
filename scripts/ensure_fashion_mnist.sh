#!/usr/bin/env bash
# Makes sure the four Fashion-MNIST IDX files are where jaxssl looks for them:
#   $JAXSSL_FMNIST_DIR if set (only there), else the data dir ($JAXSSL_DATA_DIR, else
#   $TFDS_DATA_DIR, else ~/tensorflow_datasets) if it holds all four,
#   else /usr/share/datasets/fashion-mnist (Debian's package dataset-fashion-mnist, installed
#   here when possible). The files may be gzip-compressed (*.gz) or not.
set -euo pipefail
DEFAULT=/usr/share/datasets/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

has_all() {   # has_all DIR: all four files present and non-empty (with or without .gz)
  local f
  for f in "${files[@]}"; do
    [ -s "$1/$f" ] || [ -s "$1/${f%.gz}" ] || return 1
  done
}

install_default() {   # the Debian package, as root or with password-less sudo
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$(id -u)" = 0 ]; then
    echo "Installing Debian package dataset-fashion-mnist ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  else
    return 1
  fi
}

if [ -n "${JAXSSL_FMNIST_DIR:-}" ]; then
  dirs=("$JAXSSL_FMNIST_DIR")
  looked="$JAXSSL_FMNIST_DIR (\$JAXSSL_FMNIST_DIR)"
else
  # The data dir as jaxssl resolves it (config.data.data_dir is not known here).
  DATA_DIR="${JAXSSL_DATA_DIR:-${TFDS_DATA_DIR:-${HOME:-}/tensorflow_datasets}}"
  dirs=("$DATA_DIR" "$DEFAULT")
  looked="$DATA_DIR (the data dir) and $DEFAULT"
fi
for d in "${dirs[@]}"; do
  if has_all "$d"; then exit 0; fi
done
if [ "${dirs[-1]}" = "$DEFAULT" ] && install_default; then
  exit 0
fi
cat >&2 <<MSG
Fashion-MNIST IDX files not found in $looked.
Install them with:   sudo apt-get install dataset-fashion-mnist
or put the four files (${files[*]}) in a directory and set JAXSSL_FMNIST_DIR=/that/dir,
or copy them into the data directory (\$JAXSSL_DATA_DIR).
MSG
exit 1
