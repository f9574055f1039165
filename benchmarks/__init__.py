"""`make bench`: one command that measures encoder speed, HTTP latency, memory, cold start and training time.

Run it with `python -m benchmarks.run` (see benchmarks/README.md). Nothing under `serving/` imports this.
"""
