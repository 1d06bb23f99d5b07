import sys

from needletrack.cli import main

sys.exit(main())
