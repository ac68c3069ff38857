"""ML Metadata access, read-only by default: connections, queries, and the one lineage walk
(served version -> pushed model -> model -> trainer inputs -> examples -> statistics, schema,
transform graph, hyperparameters, evaluation) over TFX's and Kubeflow Pipelines v2's layouts.

Imports ml_metadata (and TFMA/TFX inside the functions that need them), core/ and nothing above."""
