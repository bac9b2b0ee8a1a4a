"""``python -m sciml_bench`` runs the CLI."""
import sys

from sciml_bench.cli import main

sys.exit(main())
