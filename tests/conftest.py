"""Shared test setup. pytest puts this folder on sys.path (it holds this conftest), so
every test can import the contract helpers: `from contracts import run_method_test`."""
