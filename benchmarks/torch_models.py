"""PyTorch mirrors of imbjax's networks: the one-model loop a user would otherwise write.

Same layers, shapes, strides, paddings and parameter counts as `imbjax/models/lenet.py`
(Table 2), `allcnn.py` (Table 3) and `resnet.py` (Section 3.3.3); the benchmarks time
them as the reference for imbjax's populations (`population_throughput.py`,
`study_throughput.py`). Initialisation is torch's default: the cost of a step does not
depend on it. `tests/test_benchmarks.py` checks the parameter counts against the Flax
models.

Needs the `bench` extra (torch 2.13.0 CPU).
"""

from __future__ import annotations

import torch
from torch import nn

# BatchNorm: flax's running-average momentum 0.9 is torch's 0.1.
_BN = dict(eps=1e-5, momentum=0.1)


class LeNet5(nn.Sequential):
  """Table 2: conv5x5 20, maxpool, conv5x5 50, maxpool, dense 500, ReLU, dense."""

  def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
    side = ((image_size - 4) // 2 - 4) // 2
    super().__init__(
        nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(50 * side * side, 500), nn.ReLU(),
        nn.Linear(500, num_classes))


class AllCNN(nn.Module):
  """Table 3's All-CNN-C: nine 3x3/1x1 convolutions with ReLU, dropout, global mean."""

  # (out channels or None for num_classes, kernel, stride, pad, dropout before)
  _LAYERS = ((96, 3, 1, 1, 0.2), (96, 3, 1, 1, None), (96, 3, 2, 1, None),
             (192, 3, 1, 1, 0.5), (192, 3, 1, 1, None), (192, 3, 2, 1, None),
             (192, 3, 1, 0, 0.5), (192, 1, 1, 0, None), (None, 1, 1, 0, None))

  def __init__(self, num_classes: int = 10, in_channels: int = 3):
    super().__init__()
    layers, c = [], in_channels
    for feats, k, s, p, drop in self._LAYERS:
      feats = num_classes if feats is None else feats
      if drop is not None:
        layers.append(nn.Dropout(drop))
      layers += [nn.Conv2d(c, feats, k, stride=s, padding=p), nn.ReLU()]
      c = feats
    self.body = nn.Sequential(*layers)

  def forward(self, x):
    return self.body(x).mean(dim=(2, 3))


class BasicBlock(nn.Module):
  """He et al. post-activation basic block with BN and a 1x1 projection when needed."""

  def __init__(self, c_in: int, c_out: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c_out, **_BN)
    self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(c_out, **_BN)
    self.proj = None
    if stride != 1 or c_in != c_out:
      self.proj = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False),
                                nn.BatchNorm2d(c_out, **_BN))

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu((x if self.proj is None else self.proj(x)) + y)


class ResNet10(nn.Module):
  """Simon et al.'s ResNet-10: stem 7x7/2 + maxpool, one basic block per stage."""

  def __init__(self, num_classes: int = 1000, in_channels: int = 3):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                              nn.BatchNorm2d(64, **_BN), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    blocks, c = [], 64
    for width, stride in zip((64, 128, 256, 512), (1, 2, 2, 2)):
      blocks.append(BasicBlock(c, width, stride))
      c = width
    self.stages = nn.Sequential(*blocks)
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x):
    return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))


def make(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
  """The torch network mirroring imbjax's registered `name` for HWC `input_shape`.

  Raises:
    ValueError: for a name with no mirror here.
  """
  h, _, c = input_shape
  if name == "lenet5":
    return LeNet5(num_classes, c, h)
  if name == "allcnn":
    return AllCNN(num_classes, c)
  if name == "resnet10":
    return ResNet10(num_classes, c)
  raise ValueError(f"no PyTorch mirror of model {name!r}; known: lenet5, allcnn, resnet10")


def count_params(net: nn.Module) -> tuple[int, int]:
  """(trainable parameters, running statistics) as imbjax counts them."""
  params = sum(p.numel() for p in net.parameters())
  stats = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean",
                                                                       "running_var")))
  return params, stats


def forward_macs(net: nn.Module, input_shape: tuple[int, int, int]) -> int:
  """Multiply-adds of one image's forward pass through the convolutions and dense layers."""
  total = [0]

  def hook(mod, _, out):
    if isinstance(mod, nn.Conv2d):
      k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
      total[0] += out[0].numel() * k
    elif isinstance(mod, nn.Linear):
      total[0] += mod.in_features * mod.out_features

  handles = [m.register_forward_hook(hook) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
  h, w, c = input_shape
  was_training = net.training
  net.eval()
  with torch.no_grad():
    net(torch.zeros(1, c, h, w))
  net.train(was_training)
  for handle in handles:
    handle.remove()
  return total[0]
