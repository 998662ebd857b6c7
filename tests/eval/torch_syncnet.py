"""PyTorch reference of syncnet_python's SyncNetModel.S, written from its layer layout (four nn.Sequential stacks, so
its state_dict has the keys of syncnet_v2.model: netcnnaud.0.weight ... netfclip.3.bias) and used only by the
tests. Audio in NCHW [N, 1, 13, 20], lips in NCDHW [N, 3, 5, 224, 224]; both give [N, 1024]."""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU()]


def audio_stack() -> nn.Sequential:
    c2, b2 = nn.Conv2d, nn.BatchNorm2d
    return nn.Sequential(
        *_conv_bn(c2(1, 64, 3, padding=1), b2(64)), nn.MaxPool2d(1, 1),
        *_conv_bn(c2(64, 192, 3, padding=1), b2(192)), nn.MaxPool2d(3, (1, 2)),
        *_conv_bn(c2(192, 384, 3, padding=1), b2(384)),
        *_conv_bn(c2(384, 256, 3, padding=1), b2(256)),
        *_conv_bn(c2(256, 256, 3, padding=1), b2(256)), nn.MaxPool2d(3, 2),
        *_conv_bn(c2(256, 512, (5, 4)), b2(512)),
    )


def lip_stack() -> nn.Sequential:
    c3, b3 = nn.Conv3d, nn.BatchNorm3d
    same = (0, 1, 1)
    return nn.Sequential(
        *_conv_bn(c3(3, 96, (5, 7, 7), stride=(1, 2, 2)), b3(96)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn(c3(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=same), b3(256)),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=same),
        *_conv_bn(c3(256, 256, (1, 3, 3), padding=same), b3(256)),
        *_conv_bn(c3(256, 256, (1, 3, 3), padding=same), b3(256)),
        *_conv_bn(c3(256, 256, (1, 3, 3), padding=same), b3(256)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn(c3(256, 512, (1, 6, 6)), b3(512)),
    )


def head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))


class SyncNetReference(nn.Module):
    def __init__(self):
        super().__init__()
        self.netcnnaud, self.netfcaud = audio_stack(), head()
        self.netcnnlip, self.netfclip = lip_stack(), head()

    def forward_aud(self, x):
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x):
        return self.netfclip(self.netcnnlip(x).flatten(1))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """He-scaled random weights, biases, and batch-norm statistics and affine terms far from their defaults, so
    each one matters; in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                module.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()
