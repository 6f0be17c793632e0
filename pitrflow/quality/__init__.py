"""Data-quality checks for the nightly recovery drill.

A restore that finishes is not a restore that works: the drill proves the
recovered database holds the rows, keys and recent writes it should, by
running Great Expectations suites against the scratch instance.  The model
(`suites`) and the generator (`generate`) stay free of GX so they load fast;
only `run_gx` imports it, and only when a run starts.
"""
