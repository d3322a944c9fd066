import sys

from spire_pqc.cli.main import main

sys.exit(main())
