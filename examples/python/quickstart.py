"""The quick start: an SRCNN 9-5-5 (the original authors' layout: 'same' output with replicate borders)
built with magmasr and run on scikit-image's bundled camera picture, on the GPU when there is one.

Run: python examples/python/quickstart.py
"""
import time

import numpy as np
from skimage import data

import magmasr
from magmasr import nn

model = nn.Sequential(
    ("conv1", nn.Conv2d(1, 64, 9, padding="same", padding_mode="replicate", seed=1)), ("relu1", nn.ReLU()),
    ("conv2", nn.Conv2d(64, 32, 5, padding="same", padding_mode="replicate", seed=2)), ("relu2", nn.ReLU()),
    ("conv3", nn.Conv2d(32, 1, 5, padding="same", padding_mode="replicate", seed=3)),
)
image = data.camera().astype(np.float32) / 255.0  # 512x512 gray
x = image[None, None]                             # NCHW
device = "cuda" if magmasr.cuda_available() else "cpu"
model.to(device)
model.summary(x.shape)

t0 = time.perf_counter()
y = model(magmasr.from_numpy(np.ascontiguousarray(x)).to(device)).numpy()
dt = time.perf_counter() - t0
print(f"device {device}: {x.shape} -> {y.shape} in {dt * 1e3:.1f} ms; output mean {y.mean():.4f}, std {y.std():.4f}")
