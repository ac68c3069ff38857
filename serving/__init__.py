"""Loopline's TensorFlow-Serving-compatible model server.

Two modes share one front (REST + gRPC, request ids, canary routing, metrics, request logging):
- embedded: loads the pushed SavedModels itself (`serving.backend.EmbeddedBackend`);
- gateway: forwards to a real TensorFlow Serving over gRPC (`serving.backend.UpstreamBackend`).

Pure logic (no TensorFlow needed to reason about it): `errors`, `versions`, `config`, `routing`,
`json_codec`, `privacy`, `log_files`, `log_encoding`, `metrics`. Everything touching TensorFlow,
threads, processes or sockets: `servable`, `manager`, `batching`, `backend`, `request_log`,
`log_writer` (the request-log writer process), `service`, `rest`, `grpc_service`, `server`, `cli`.
"""
