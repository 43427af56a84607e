"""``python -m shipper``: the same as the ``shipper`` command."""

from shipper.cli import main

raise SystemExit(main())
