"""Scenario: validation naming the field and value; broadcasting."""
import math

import numpy as np
import pytest

from workloads import Scenario, ScenarioError


@pytest.mark.parametrize("field,value", [("batch", 0), ("batch", -1), ("batch", 2.5), ("prompt", 0),
                                         ("gen", math.nan), ("tp", 0), ("w_bits", 0), ("kv_bits", 64),
                                         ("samples", 0), ("sparse_budget", -3), ("batch", "many")])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ScenarioError, match=field):
        Scenario(**{field: value})


def test_bad_value_inside_an_array_is_reported():
    with pytest.raises(ScenarioError, match="batch: -2 is invalid"):
        Scenario(batch=[1, 4, -2])


def test_broadcast_shape_and_columns():
    sc = Scenario(batch=np.array([1, 8, 64])[:, None], prompt=[128, 2048])
    assert sc.shape == (3, 2) and sc.size == 6
    cols = sc.columns()
    assert cols["batch"].tolist() == [1, 1, 8, 8, 64, 64] and cols["prompt"].tolist() == [128, 2048] * 3
