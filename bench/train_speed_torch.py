"""PyTorch peer of bench/train_speed.py: the same backbones, shapes and training step.

Run by bench/train_speed.py with an interpreter that has torch (its `--peer_python`);
it imports neither TensorFlow nor wsdhash, so it also runs from a scratch virtualenv
that holds only torch and numpy. Prints one JSON object per backbone:
{"backbone", "input", "train", "encode"} (images/s).

The models are written here from the same layouts as wsdhash.models (torchvision is not
needed): CaffeNet (227 px, grouped conv2/conv4/conv5, pool-then-LRN), torchvision's
AlexNet (224 px) and ResNet-18 (224 px), each followed by OrthoHash's head (Linear
without bias + BatchNorm1d) and loss (CosFace cross-entropy on cosines to a +-1
codebook, plus the cosine quantization term), with SGD (momentum 0.9). The step takes
uint8 images in memory and normalises them inside the step, as the Keras model does.

    python bench/train_speed_torch.py --backbones=alexnet_caffe,alexnet,resnet18
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def caffenet() -> tuple[nn.Module, int]:
    def conv(i, o, k, stride=1, padding=0, groups=1):
        return [nn.Conv2d(i, o, k, stride, padding, groups=groups), nn.ReLU(inplace=True)]

    layers = [
        *conv(3, 96, 11, 4),
        nn.MaxPool2d(3, 2),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        *conv(96, 256, 5, padding=2, groups=2),
        nn.MaxPool2d(3, 2),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        *conv(256, 384, 3, padding=1),
        *conv(384, 384, 3, padding=1, groups=2),
        *conv(384, 256, 3, padding=1, groups=2),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(9216, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
    ]
    return nn.Sequential(*layers), 227


def alexnet() -> tuple[nn.Module, int]:
    def conv(i, o, k, stride=1, padding=0):
        return [nn.Conv2d(i, o, k, stride, padding), nn.ReLU(inplace=True)]

    layers = [
        *conv(3, 64, 11, 4, 2),
        nn.MaxPool2d(3, 2),
        *conv(64, 192, 5, padding=2),
        nn.MaxPool2d(3, 2),
        *conv(192, 384, 3, padding=1),
        *conv(384, 256, 3, padding=1),
        *conv(256, 256, 3, padding=1),
        nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(9216, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers), 224


class BasicBlock(nn.Module):
    def __init__(self, i, o, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(o)
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o)
        self.downsample = None
        if stride != 1 or i != o:
            self.downsample = nn.Sequential(
                nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + identity)


def resnet18() -> tuple[nn.Module, int]:
    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    channels = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(channels, width, stride), BasicBlock(width, width, 1)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), 224


BACKBONES = {"alexnet_caffe": caffenet, "alexnet": alexnet, "resnet18": resnet18}
FEATURE_DIMS = {"alexnet_caffe": 4096, "alexnet": 4096, "resnet18": 512}


def orthohash_loss(codes, labels, codebook, margin=0.2):
    """CosFace cross-entropy on cosines to the +-1 codebook + the cosine quantization term."""
    bits = codes.shape[1]
    cosines = F.normalize(codes, dim=1) @ F.normalize(codebook, dim=1).T
    logits = math.sqrt(bits) * (cosines - margin * F.one_hot(labels, codebook.shape[0]))
    ce = F.cross_entropy(logits, labels)
    quantization = 1 - F.cosine_similarity(codes, torch.sign(codes).detach(), dim=1).mean()
    return ce + quantization


def time_backbone(name: str, batch_size: int, bits: int, steps: int) -> dict:
    torch.manual_seed(0)
    backbone, size = BACKBONES[name]()
    head = nn.Sequential(nn.Linear(FEATURE_DIMS[name], bits, bias=False), nn.BatchNorm1d(bits))
    model = nn.Sequential(backbone, head)
    num_classes = 10
    codebook = torch.sign(torch.randn(num_classes, bits))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    rng = np.random.default_rng(0)
    # NHWC uint8 in memory, as the Keras benchmark; moved to NCHW float in the step.
    images = torch.from_numpy(rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, num_classes, batch_size))
    mean = torch.tensor([123.68, 116.78, 103.94]).view(1, 3, 1, 1)
    std = torch.tensor([58.4, 57.1, 57.4]).view(1, 3, 1, 1)

    def normalized():
        return (images.permute(0, 3, 1, 2).float() - mean) / std

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = orthohash_loss(model(normalized()), labels, codebook)
        loss.backward()
        optimizer.step()
        return float(loss)

    def encode_step():
        model.eval()
        with torch.no_grad():
            return model(normalized()).sum().item()

    rates = {}
    for key, step in (("train", train_step), ("encode", encode_step)):
        for _ in range(2):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates[key] = steps * batch_size / (time.perf_counter() - start)
    return {"backbone": name, "input": size, **rates}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="alexnet_caffe,alexnet,resnet18")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    for name in args.backbones.split(","):
        if name not in BACKBONES:
            print(json.dumps({"backbone": name, "error": "no PyTorch peer"}), flush=True)
            continue
        result = time_backbone(name, args.batch_size, args.bits, args.steps)
        result["torch"] = torch.__version__
        result["threads"] = torch.get_num_threads()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
