"""The benchmark harness: targets, load generators, instruction counts, reports and the dashboard."""
