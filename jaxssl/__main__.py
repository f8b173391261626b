"""`python -m jaxssl ...` is the `jaxssl` command."""
import sys

from jaxssl.cli import main

if __name__ == "__main__":
  sys.exit(main())
