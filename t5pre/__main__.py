import sys

from t5pre.cli import main

sys.exit(main())
