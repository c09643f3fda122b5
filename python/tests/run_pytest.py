"""ctest's entry to the Python tests: pytest on the given folder, or exit 77 (reported by
ctest as skipped) when pytest is not installed."""
import sys

try:
    import pytest
except ImportError:
    print("SKIPPED: pytest is not installed (pip install pytest)")
    sys.exit(77)

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
