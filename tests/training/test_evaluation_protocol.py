"""Training's evaluation protocol: built from its settings, today's by default."""

import dataclasses
import json

import pytest

from wsdhash.eval import EvalProtocol
from wsdhash.training.config import TrainConfig
from wsdhash.training.run_info import resume_differences


def test_default_is_the_protocol_training_always_used():
    protocol = TrainConfig().evaluation_protocol(1000)
    assert protocol == EvalProtocol(topk=1000, tie_bounds=True, radius_curve=False)
    assert protocol.ties == "index" and protocol.empty == "zero" and protocol.seed == 0
    assert protocol.map_name == "mAP@1000[ties=index,empty=zero]"


def test_settings_choose_r_ties_and_empty():
    assert TrainConfig(topk=0).evaluation_protocol(1000).topk is None  # 0: all
    assert TrainConfig(topk=50).evaluation_protocol(1000).topk == 50
    assert TrainConfig().evaluation_protocol(None).topk is None
    protocol = TrainConfig(ties="random", empty="skip").evaluation_protocol(5000)
    assert protocol.map_name == "mAP@5000[ties=random,seed=0,empty=skip]"
    with pytest.raises(ValueError, match="tie policy"):
        TrainConfig(ties="first")
    with pytest.raises(ValueError, match="empty policy"):
        TrainConfig(empty="drop")


def test_a_run_recorded_before_ties_resumes_as_index_ties():
    stored = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))  # as run_info.json
    del stored["ties"]
    assert resume_differences(stored, TrainConfig()) == []
    changes = resume_differences(stored, TrainConfig(ties="pessimistic"))
    assert [(c.field, c.stored, c.changeable) for c in changes] == [("ties", "index", False)]
