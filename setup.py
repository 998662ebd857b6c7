"""emo-jax: EMO (Emote Portrait Alive) in JAX/Flax for TPU-pod-scale training."""
from setuptools import find_packages, setup

setup(
    name="emo-jax",
    version="0.1.0",
    description="Audio-driven portrait video diffusion (EMO) in JAX/Flax, sharded for TPU pods",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["emo_jax", "emo_jax.*", "data_pipeline", "data_pipeline.*", "configs"]),
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax",
        "orbax-checkpoint",
        "grain",
        "array-record",
        "ml-collections",
        "numpy",
        "safetensors",
        "transformers",
        "av",
        "pillow",
        "opencv-python-headless>=4.8,<5",  # 5.x dropped CascadeClassifier, our offline face detector
        "msgpack",
        "tqdm",
        "tensorboardX",
    ],
    extras_require={
        "test": ["pytest", "torch==2.13.0", "diffusers", "transformers", "safetensors", "libtpu",
                 "tensorflow-datasets", "importlib_resources", "ai-edge-litert",
                 "python_speech_features",  # SyncNet's MFCC reference (tests/eval/test_syncnet.py)
                 "dlib-bin", "apache-beam"],
        # MediaPipe's face detector and Face Mesh (emo-prepare's labels) run on the LiteRT interpreter; the model
        # files come from `python -m emo_jax.faces.models`.
        "faces": ["ai-edge-litert"],
        # emo-eval's F-SIM: dlib's face descriptor (its model files: python -m emo_jax.eval.fetch dlib).
        "eval": ["dlib-bin"],
        "tpu": ["libtpu"],
        "gpu": ["jax[cuda12]"],
        "tfds": ["tensorflow-datasets", "importlib_resources"],
        # emo-prepare's Beam pipeline (DirectRunner locally; Dataflow, Flink, Spark on a cluster): docs/data.md.
        "beam": ["apache-beam"],
    },
    entry_points={
        "console_scripts": [
            "emo-summary=emo_jax.cli.summary:main",
            "emo-audio-features=emo_jax.cli.audio_features:main",
            "emo-prepare=emo_jax.cli.prepare:main",
            "emo-train=emo_jax.cli.train:main",
            "emo-generate=emo_jax.cli.generate:main",
            "emo-export=emo_jax.cli.export:main",
            "emo-demo=emo_jax.cli.demo:main",
            "emo-compile=emo_jax.cli.compile:main",
            "emo-eval=emo_jax.cli.eval:main",
        ],
    },
)
