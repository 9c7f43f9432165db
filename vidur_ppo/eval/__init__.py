"""Paired held-out evaluation: the paired loop, suites of scenarios, statistics, reports and figures, sweep aggregation."""
