import sys

from dann.cli import main

sys.exit(main())
