"""The project's own tests record their runs in a history store of their own, not in reports/history.sqlite."""

import os
import tempfile

os.environ.setdefault(
    "CONFORMANCE_HISTORY", os.path.join(tempfile.mkdtemp(prefix="conformance-history-"), "history.sqlite")
)
