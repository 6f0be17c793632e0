import sys

from pitrflow.cli import main

sys.exit(main())
