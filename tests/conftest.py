import os
import pathlib
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # As dreamer.py runs TensorFlow.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
