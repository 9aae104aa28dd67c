"""Every `effiscope bench` command (compress, overhead, parallel, startup, techniques, tune), one
module each, all measured by one interleaved loop (loop.compare) with profiler.figures.stats' intervals."""
