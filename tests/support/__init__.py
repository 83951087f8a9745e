"""Test helpers: processes, proxies and sample data the tests and benchmarks drive the station with (not shipped)."""
