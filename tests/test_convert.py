"""d2l_ext.convert / d2l_ext.to_torch on models the project did not define."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import d2l_ext
from d2l_ext import nn as dnn
from d2l_ext.convert import TORCH_TO_D2L

# float32 outputs of a conv net differ from torch's only by summation order in the
# GEMMs (a few ulp per layer, growing over ~20 layers): 1e-4 relative is ~800 ulp.
RTOL, ATOL = 1e-4, 1e-5


class BasicBlock(nn.Module):
    """A torchvision-style ResNet block, written here (not the project's)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Tagger(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM -> GRU cell over the last state -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 12, num_layers=2, bidirectional=True, batch_first=True)
        self.cell = nn.GRUCell(24, 10)
        self.rnn = nn.RNN(24, 6, nonlinearity="relu")
        self.conv = nn.Conv1d(24, 5, 3, padding=1, padding_mode="circular")
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Linear(10, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        h = self.cell(out[:, -1])
        r, _ = self.rnn(out.transpose(0, 1))
        c = self.pool(self.conv(out.transpose(1, 2)))
        return self.head(h) + r.sum() * 1e-3 + c.mean() * 1e-3


def _types(model: nn.Module) -> list[type]:
    return [type(m) for m in model.modules()]


def _torch_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in TORCH_TO_D2L]


def _fwd_bwd(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_convert_resnet_same_numbers_and_parameters():
    torch.manual_seed(0)
    model = TinyResNet()
    twin = copy.deepcopy(model)
    params = list(model.parameters())
    n_layers = len(_torch_layers(model))
    assert n_layers == 12  # 9 convs in the blocks and stem, 1 downsample conv, max pool, adaptive pool

    assert d2l_ext.convert(model) is model
    assert _torch_layers(model) == []
    swapped = [m for m in model.modules() if type(m) in TORCH_TO_D2L.values()]
    assert len(swapped) == n_layers
    assert isinstance(model.conv1, dnn.Conv2d) and isinstance(model.conv1, nn.Conv2d)
    assert isinstance(model.layer2[0].downsample[0], dnn.Conv2d)
    assert isinstance(model.maxpool, dnn.MaxPool2d) and isinstance(model.avgpool, dnn.AdaptiveAvgPool2d)
    assert all(a is b for a, b in zip(model.parameters(), params)), "parameters must be shared, not copied"
    assert list(model.state_dict()) == list(twin.state_dict())
    assert repr(model) == repr(twin)

    x = torch.randn(3, 3, 40, 40)
    out, grads = _fwd_bwd(model, x)
    ref, ref_grads = _fwd_bwd(twin, x)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=RTOL, atol=ATOL * 10)  # sums over batch * spatial positions


def test_optimizer_built_before_convert_still_trains_the_model():
    torch.manual_seed(1)
    model = TinyResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    d2l_ext.convert(model)
    before = model.conv1.weight.detach().clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.conv1.weight.detach())


def test_to_torch_reverses_convert():
    torch.manual_seed(2)
    model = TinyResNet()
    original = _types(model)
    d2l_ext.convert(model)
    assert _types(model) != original
    assert d2l_ext.to_torch(model) is model
    assert _types(model) == original


def test_not_inplace_leaves_the_original_alone():
    model = TinyResNet()
    original = _types(model)
    converted = d2l_ext.convert(model, inplace=False)
    assert converted is not model and _types(model) == original
    assert _torch_layers(converted) == []
    assert all(a is not b for a, b in zip(model.parameters(), converted.parameters()))


def test_recurrent_and_1d_layers():
    torch.manual_seed(3)
    model = Tagger()
    twin = copy.deepcopy(model)
    d2l_ext.convert(model)
    for name, cls in (("lstm", dnn.LSTM), ("cell", dnn.GRUCell), ("rnn", dnn.RNN), ("conv", dnn.Conv1d)):
        assert type(getattr(model, name)) is cls, name
    assert type(model.pool) is dnn.MaxPool1d and type(model.embed) is nn.Embedding
    tokens = torch.randint(0, 20, (4, 9))
    out, grads = _fwd_bwd(model, tokens)
    ref, ref_grads = _fwd_bwd(twin, tokens)
    torch.testing.assert_close(out, ref, rtol=RTOL, atol=ATOL)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=RTOL, atol=ATOL)


def test_loss_module_and_top_level_layer():
    loss = nn.CrossEntropyLoss(weight=torch.rand(5) + 0.5, label_smoothing=0.1, ignore_index=2)
    ours = d2l_ext.convert(loss, inplace=False)
    assert type(ours) is dnn.CrossEntropyLoss and type(loss) is nn.CrossEntropyLoss
    assert ours.weight is not None and torch.equal(ours.weight, loss.weight)
    x, t = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 2])
    torch.testing.assert_close(ours(x, t), loss(x, t), rtol=1e-6, atol=1e-6)
    conv = nn.Conv2d(2, 3, 3)
    swapped = d2l_ext.convert(conv)  # a bare layer comes back as a new object on the same weights
    assert type(swapped) is dnn.Conv2d and swapped.weight is conv.weight


def test_families_can_be_left_out():
    model = Tagger()
    d2l_ext.convert(model, rnn=False, pool=False)
    assert type(model.lstm) is nn.LSTM and type(model.cell) is nn.GRUCell and type(model.pool) is nn.MaxPool1d
    assert type(model.conv) is dnn.Conv1d


class MyConv(nn.Conv2d):
    """A user subclass: its forward may differ, so convert must not touch it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_unsupported_configurations_are_left_as_they_are():
    weight_normed = torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(2, 2, 3))
    complex_conv = nn.Conv2d(2, 2, 3, dtype=torch.complex64)
    model = nn.Sequential(MyConv(2, 2, 3), weight_normed, complex_conv, nn.Conv2d(2, 2, 1), nn.MaxPool3d(2))
    before = _types(model)
    d2l_ext.convert(model)
    after = _types(model)
    assert after[1:4] == before[1:4]  # subclass, parametrized, complex: untouched
    assert type(model[3]) is dnn.Conv2d  # the plain conv is swapped
    assert type(model[4]) is nn.MaxPool3d  # no 3-D pooling in d2l_ext


def test_shared_module_stays_shared():
    pool = nn.MaxPool2d(2)
    model = nn.Sequential(nn.Sequential(pool), nn.Sequential(pool))
    d2l_ext.convert(model)
    assert type(model[0][0]) is dnn.MaxPool2d and model[0][0] is model[1][0]


@pytest.mark.parametrize("family", ["conv", "pool", "rnn", "loss"])
def test_every_torch_class_in_the_table_has_its_d2l_subclass(family):
    from d2l_ext.convert import _GROUPS

    for cls in _GROUPS[family]:
        base = cls.__mro__[1]
        assert base.__module__.startswith("torch.nn") and TORCH_TO_D2L[base] is cls
        assert cls.__module__.startswith("d2l_ext.nn")
