"""Ultrasound tests: helpers live in us_testutil.py (imported by module name, like tests/qa)."""
