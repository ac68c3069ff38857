"""Feature contract of the Chicago Taxi "big tipper" model.

Pure constants (no TensorFlow import): the schema, the transform, the model, the server and the
feedback loop all name features through this module, so a rename happens in one place.
"""

LABEL_KEY = 'big_tipper'
"""1 when the tip exceeds 20% of the fare (`tips > 0.2 * fare`), else 0. Computed once when the raw
data is split into spans; `tips` itself never reaches the spans or the server."""

# Numeric features whose normalization is chosen by the tuner (see models/preprocessing.py).
NUMERIC_FEATURES = ('fare', 'trip_miles', 'trip_seconds')

# Coordinates: bucketized on a grid over Chicago.
COORDINATE_FEATURES = ('pickup_latitude', 'pickup_longitude', 'dropoff_latitude',
                       'dropoff_longitude')

# Small integer codes fed as categories: {feature: number of values, 0 is "missing"}.
INTEGER_CATEGORICAL_FEATURES = {
    'trip_start_hour': 24,
    'trip_start_day': 8,
    'trip_start_month': 13,
    'pickup_community_area': 78,
    'dropoff_community_area': 78,
}

# Strings turned into vocabularies: {feature: vocabulary size kept (the rest is OOV)}.
STRING_CATEGORICAL_FEATURES = {
    'payment_type': 10,
    'company': 50,
}

# In the data and the schema, not read by the model (identifier-like or always empty).
UNUSED_FEATURES = ('trip_start_timestamp', 'pickup_census_tract', 'dropoff_census_tract')

TIME_FEATURE = 'trip_start_timestamp'
"""Orders the training rows in time: the search and early stopping validate on the latest ones
(models/model.py). Not a model input."""

MODEL_FEATURES = (NUMERIC_FEATURES + COORDINATE_FEATURES + tuple(INTEGER_CATEGORICAL_FEATURES) +
                  tuple(STRING_CATEGORICAL_FEATURES))
SERVING_FEATURES = MODEL_FEATURES + UNUSED_FEATURES
"""Every column a serving request may carry (all of the span columns except the label)."""

SLICE_FEATURES = ('trip_start_hour', 'payment_type', 'company')

# The exported SavedModel's contract.
SERVING_SIGNATURE = 'serving_default'
SERVING_INPUT_KEY = 'examples'          # DT_STRING [-1]: serialized tf.Example
PREDICTION_KEY = 'probabilities'        # DT_FLOAT [-1, 1]: P(big tipper), calibrated
RAW_LOGIT_SIGNATURE = 'raw_logit'       # the same input -> the model's logit before calibration,
RAW_LOGIT_KEY = 'logit'                 # DT_FLOAT [-1, 1] (for analysis; models/model.py)
TRANSFORM_SIGNATURE = 'transform_features'
