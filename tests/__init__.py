"""The triage test suite (a package, so test modules can share conftest helpers)."""
