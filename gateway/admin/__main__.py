"""`python -m gateway.admin …` is the `bitcache-admin` command."""

import sys

from gateway.admin.cli import main

sys.exit(main())
