"""For bench/storm.py --gc-python-defaults: the live server it starts keeps Python's own
collector settings (thresholds 700, 10, 10; nothing frozen), so that what live.server.tune_gc
buys can be measured. Put on the server's PYTHONPATH only: gc.freeze and
gc.set_threshold do nothing in that process."""

import gc

gc.freeze = lambda: None
gc.set_threshold = lambda *thresholds: None
