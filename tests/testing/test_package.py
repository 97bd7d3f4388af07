"""``execbridge.testing``'s public names: one sorted ``__all__``. (That no product module imports the
package is import-linter's contract in pyproject.toml.)"""

from __future__ import annotations

import execbridge.testing


def test_all_is_sorted_and_complete():
    names = execbridge.testing.__all__
    assert names == sorted(names)
    assert all(hasattr(execbridge.testing, name) for name in names)
