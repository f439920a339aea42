import sys

from modelyard.gateway.process.cli import main

sys.exit(main())
