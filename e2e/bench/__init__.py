"""`e2e/bench/run.py`, split by concern: calls, lists, rss (memory), report; wrk and the
processes (servers, on the e2e harness) beside them."""
