"""Fixtures of the kernel tests."""
from __future__ import annotations

import sys

import pytest

from parrot_kernels import flashinfer_backend


@pytest.fixture
def fake_flashinfer(monkeypatch):
    """`import flashinfer` gives the CPU stand-in (fake_flashinfer.py) for one test."""
    import fake_flashinfer

    monkeypatch.setitem(sys.modules, "flashinfer", fake_flashinfer)
    monkeypatch.setattr(flashinfer_backend, "WORKSPACE_BYTES", 1 << 16)  # the stand-in uses none
    return fake_flashinfer
