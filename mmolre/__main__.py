import sys

from mmolre.cli import main

sys.exit(main())
