"""Resuming reads a run folder's checkpoint files without running code a planted file carries."""

from __future__ import annotations

import os
import random

import pytest
import torch

from unfork.errors import UserError
from unfork.train import checkpoint


class Planted:
    """Pickles to a call of ``os.mkdir(path)``: what a crafted ``optimizer.pt`` could run instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _save(folder):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(3)).sum().backward()
    optimizer.step()
    scheduler.step()
    checkpoint.save(folder, model=model, optimizer=optimizer, scheduler=scheduler,
                    position=checkpoint.Position(global_step=1), settings={})
    return model, optimizer, scheduler


@pytest.mark.parametrize("file", ["optimizer.pt", "rng.pt"])
def test_a_planted_pickle_is_refused_and_not_run(tmp_path, file):
    folder = tmp_path / "checkpoints" / "p0-s000001"
    model, optimizer, scheduler = _save(folder)
    marker = tmp_path / "ran"
    torch.save({"optimizer": Planted(marker), "scheduler": Planted(marker)} if file == "optimizer.pt"
               else Planted(marker), folder / file)
    with pytest.raises(UserError, match=f"{file}.*refusing to load it"):
        checkpoint.load(folder, model=model, optimizer=optimizer, scheduler=scheduler)
    assert not marker.exists()


def test_a_checkpoint_still_restores_optimizer_scheduler_and_random_state(tmp_path):
    folder = tmp_path / "checkpoints" / "p0-s000001"
    random.seed(5)
    torch.manual_seed(5)
    _model, optimizer, scheduler = _save(folder)
    want = (random.random(), torch.rand(2))
    random.seed(9)
    torch.manual_seed(9)
    model = torch.nn.Linear(3, 2)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1.0)
    pos = checkpoint.load(folder, model=model, optimizer=fresh, scheduler=sched)
    assert pos.global_step == 1
    assert (random.random(), *torch.rand(2).tolist()) == (want[0], *want[1].tolist())
    assert sched.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"]
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
