"""``python -m chatcore_api`` is the ``chatcore`` command."""

from chatcore_api.cli import main

raise SystemExit(main())
