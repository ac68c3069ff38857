"""Loopline: an end-to-end TFX 1.16 pipeline, from versioned data to serving and back.

Install with the tested pins: `pip install -c constraints.txt -e '.[test]'` (scripts/bootstrap.sh
does this in .venv).
"""
import setuptools

setuptools.setup(
    name='loopline',
    version='0.1.0',
    description='End-to-end TFX pipeline: data, validation, training, serving, drift, retraining.',
    python_requires='>=3.9,<3.11',
    packages=setuptools.find_packages(include=[
        'core', 'core.*', 'models', 'models.*', 'metadata', 'metadata.*', 'components',
        'components.*', 'serving', 'serving.*', 'traffic', 'traffic.*', 'registry', 'registry.*',
        'pipeline', 'pipeline.*', 'loopline', 'loopline.*']),
    install_requires=[
        'tfx[kfp]==1.16.0',
        'apache-beam[gcp]==2.59.0',
        'keras==3.6.0',
        'tf-keras==2.16.0',
        # Grows the gradient boosted trees (models/model.py); TensorFlow Decision Forests' library.
        'ydf',
        'kfp==2.5.0',
        'tensorflow-serving-api==2.16.1',
        'grpcio',
        'grpcio-health-checking',
        'prometheus-client',
        'uvloop',
        'google-crc32c',
        'keras-tuner',
        'scikit-learn',
        'matplotlib',
        'nbclient',
        'nbformat',
        'ipykernel',
    ],
    extras_require={'test': ['pytest', 'pytest-timeout', 'hypothesis', 'requests', 'portpicker',
                             'PyYAML']},
    entry_points={'console_scripts': ['loopline=loopline.cli:main']},
)
