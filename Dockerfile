# Loopline's pipeline image for Kubeflow Pipelines v2 (open-source KFP or Vertex AI): TFX 1.16's
# own image plus this package at the exact pins of constraints.txt. Every task of the compiled
# pipeline runs in it (`python -m components.kfp_v2_entrypoint`, TFX's KFP v2 executor entrypoint
# with the input types repaired, and `python -m components.span_example_gen.kfp_v2_driver` for the
# span-range ExampleGen), and so can Dataflow/Flink/Spark workers (deploy/kubeflow/beam-*.args).
#
#   docker build -t REGISTRY/loopline-pipeline:0.1.0 .
#   docker push REGISTRY/loopline-pipeline:0.1.0
#   loopline compile --target kfp --root gs://BUCKET/loopline --image REGISTRY/loopline-pipeline:0.1.0
#
# Object storage: gs:// works with TensorFlow's file system as is. For s3:// (AWS S3, or MinIO
# with S3_ENDPOINT/AWS_* set on the tasks), TensorFlow 2.16 needs tensorflow-io's file systems:
#   docker build --build-arg EXTRA_PIP="tensorflow-io==0.37.1" ...
FROM gcr.io/tfx-oss-public/tfx:1.16.0

ARG EXTRA_PIP=""
ENV PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

# The repository (code, curated schema, bundled spans) at /loopline: the compiled pipeline's
# defaults read /loopline/schema/schema.pbtxt and /loopline/data/spans (runtime parameters
# schema_file and data_root point elsewhere per run).
WORKDIR /loopline
COPY constraints.txt setup.py ./
COPY core/ core/
COPY models/ models/
COPY metadata/ metadata/
COPY components/ components/
COPY serving/ serving/
COPY traffic/ traffic/
COPY registry/ registry/
COPY pipeline/ pipeline/
COPY loopline/ loopline/
COPY schema/ schema/
COPY data/spans/ data/spans/

# Same pins as the tested environment; fail the build if they do not hold together.
RUN python -m pip install --no-cache-dir -c constraints.txt . ${EXTRA_PIP} \
 && python -m pip check \
 && python -c "import tfx, kfp, components.kfp_v2_entrypoint, components.span_example_gen.kfp_v2_driver; \
assert tfx.__version__ == '1.16.0', tfx.__version__"

# KFP sets each task's command and args; this only makes `docker run IMAGE` say what it is.
CMD ["python", "-m", "loopline.cli", "--help"]
