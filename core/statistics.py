"""The statistics options every TFDV computation of Loopline shares (StatisticsGen of both
pipelines, the DriftDetector's serving statistics): finer histograms than TFDV's defaults (10
buckets, 20 top values), which drift comparisons need. Keyword arguments of `tfdv.StatsOptions`.
"""

STATS_OPTIONS = dict(num_histogram_buckets=50, num_quantiles_histogram_buckets=50,
                     num_top_values=100, num_rank_histogram_buckets=100)
