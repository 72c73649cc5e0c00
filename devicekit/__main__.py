"""``python -m devicekit simulate ...`` and ``python -m devicekit schema [DIR]``."""

from devicekit.cli import main

raise SystemExit(main())
