"""``python -m vlastack`` runs the CLI."""

import sys

from vlastack.cli.main import main

sys.exit(main())
