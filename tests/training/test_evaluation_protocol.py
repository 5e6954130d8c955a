"""Training's evaluation protocol: built from its settings, today's by default."""

import json

import pytest

from wsdhash.eval import EvalProtocol
from wsdhash.training.config import EvaluationConfig, TrainConfig, to_flat_dict
from wsdhash.training.run_info import resume_differences


def test_default_is_the_protocol_training_always_used():
    protocol = TrainConfig().evaluation.protocol(1000)
    assert protocol == EvalProtocol(topk=1000, tie_bounds=True, radius_curve=False)
    assert protocol.ties == "index" and protocol.empty == "zero" and protocol.seed == 0
    assert protocol.map_name == "mAP@1000[ties=index,empty=zero]"


def test_settings_choose_r_ties_and_empty():
    assert EvaluationConfig(topk=0).protocol(1000).topk is None  # 0: all
    assert EvaluationConfig(topk=50).protocol(1000).topk == 50
    assert EvaluationConfig().protocol(None).topk is None
    protocol = EvaluationConfig(ties="random", empty="skip").protocol(5000)
    assert protocol.map_name == "mAP@5000[ties=random,seed=0,empty=skip]"
    with pytest.raises(ValueError, match="tie policy"):
        EvaluationConfig(ties="first")
    with pytest.raises(ValueError, match="empty policy"):
        EvaluationConfig(empty="drop")


def test_a_run_recorded_before_ties_resumes_as_index_ties():
    stored = json.loads(json.dumps(to_flat_dict(TrainConfig())))  # as run_info.json
    del stored["ties"]
    assert resume_differences(stored, TrainConfig()) == []
    changes = resume_differences(
        stored, TrainConfig(evaluation=EvaluationConfig(ties="pessimistic"))
    )
    assert [(c.field, c.stored, c.changeable) for c in changes] == [("ties", "index", False)]
