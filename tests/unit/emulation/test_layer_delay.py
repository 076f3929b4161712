"""The per-layer delay fallback: hooks sleep elapsed * (1/quota - 1) after each layer (fake clock and sleep)."""

import pytest
import torch
from torch import nn

from emulation.layer_delay import LayerDelay


class FakeTime:
    """A clock that each layer advances by 10 ms, and a sleep that records instead of sleeping."""

    def __init__(self):
        self.now_s = 0.0
        self.sleeps_s = []

    def clock(self):
        return self.now_s

    def sleep(self, seconds):
        self.sleeps_s.append(seconds)


class TenMsLayer(nn.Module):
    def __init__(self, fake):
        super().__init__()
        self.fake = fake

    def forward(self, hidden_states):
        self.fake.now_s += 0.010
        return hidden_states


def layers(fake, count=3):
    return nn.ModuleList(TenMsLayer(fake) for _ in range(count))


def test_each_layer_sleeps_its_time_times_one_over_quota_minus_one():
    fake = FakeTime()
    stack = layers(fake)
    LayerDelay(0.25, clock=fake.clock, sleep=fake.sleep).install(stack)
    hidden_states = torch.zeros(1, 4)
    for layer in stack:
        hidden_states = layer(hidden_states)
    assert fake.sleeps_s == pytest.approx([0.030, 0.030, 0.030])


def test_full_core_quota_installs_no_hooks():
    fake = FakeTime()
    stack = layers(fake)
    delay = LayerDelay(1.0, clock=fake.clock, sleep=fake.sleep).install(stack)
    stack[0](torch.zeros(1))
    assert delay.hooked_layers == 0 and fake.sleeps_s == []


def test_removed_hooks_no_longer_sleep():
    fake = FakeTime()
    stack = layers(fake, count=2)
    delay = LayerDelay(0.5, clock=fake.clock, sleep=fake.sleep).install(stack)
    assert delay.hooked_layers == 2
    delay.remove()
    stack[0](torch.zeros(1))
    assert fake.sleeps_s == []
