"""PyTorch reference of Deep3DFaceRecon_pytorch's face reconstruction network (ReconNetWrapper with a ResNet-50 and
no last fc), written from its architecture: torchvision's ResNet-50 layout (bottleneck v1.5, stride in the 3x3
convolution, projection shortcut `downsample` = 1x1 conv + batch norm, global average pool) under `backbone`, and
seven 1x1 convolutions with bias (`final_layers`, widths 80, 64, 80, 3, 27, 2, 1) whose outputs are concatenated.
Its state_dict has the keys of the repository's `net_recon`. Built with random weights: nothing is downloaded;
torchvision is not used (its wheels are built against the CUDA torch, not the +cpu torch this project pins).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTHS = (80, 64, 80, 3, 27, 2, 1)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.downsample = None
        if stride != 1 or cin != 4 * width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(4 * width))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for stage, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = 4 * width
            setattr(self, f"layer{stage}", nn.Sequential(*layers))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return F.adaptive_avg_pool2d(x, 1)


class ReconNet(nn.Module):
    """Images [N, 3, 224, 224] in [0, 1] -> coefficients [N, 257]."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50()
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, w, 1, bias=True) for w in HEAD_WIDTHS])

    def forward(self, x):
        x = self.backbone(x)
        return torch.flatten(torch.cat([layer(x) for layer in self.final_layers], dim=1), 1)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights with batch-norm statistics and affine terms far from their defaults, so each one matters;
    the last batch norm of each residual branch is scaled down so activations stay of order one over 16 blocks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                gain = 0.3 if name.endswith("bn3") else 1.0
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                module.weight.copy_((torch.rand(c, generator=g) * 0.5 + 0.75) * gain)
                module.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()
