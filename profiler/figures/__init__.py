"""What a run's figures mean, without torch: the metric catalogue and its formatting, statistics,
the one verdict rule, segments, theory (memory and FLOPs), device peaks, energy figures."""
