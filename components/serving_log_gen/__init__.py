"""ServingLogExampleGen: request-log PredictionLogs of a time window -> an Examples artifact."""
