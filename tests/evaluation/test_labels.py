"""Checkpoint labels from config differences (``evaluation.labels``) and the units written for the grid."""

import pytest

from evaluation import registry
from evaluation.labels import config_labels, differing_keys, flatten


def _config(lr: float, out: str, **model: object) -> dict:
    return {
        "model": {"name": "fno-small", "modes": 8, **model},
        "optimizer": {"lr": lr, "weight_decay": 1e-4},
        "paths": {"output_dir": out, "cache_dir": ".cache"},
        "callbacks": {"checkpoint": {"dirpath": f"{out}/checkpoints"}},
        "trainer": {"default_root_dir": out, "max_steps": 20},
    }


def test_flatten_gives_dotted_leaves():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}


def test_runs_differing_in_the_learning_rate_are_labelled_by_it():
    configs = [_config(0.001, "/runs/a"), _config(0.003, "/runs/b")]
    assert differing_keys(configs) == ["optimizer.lr"]  # output directories are not a difference
    assert config_labels(["fno-small"] * 2, configs) == [
        "fno-small (optimizer.lr=0.001)",
        "fno-small (optimizer.lr=0.003)",
    ]


def test_identical_configs_keep_their_numbers():
    configs = [_config(0.001, "/runs/a"), _config(0.001, "/runs/b")]
    assert config_labels(["fno-small"] * 2, configs) == ["fno-small#1", "fno-small#2"]


def test_only_the_runs_that_coincide_are_numbered():
    configs = [_config(0.001, "/a"), _config(0.01, "/b"), _config(0.001, "/c")]
    assert config_labels(["fno-small"] * 3, configs) == [
        "fno-small (optimizer.lr=0.001)#1",
        "fno-small (optimizer.lr=0.01)",
        "fno-small (optimizer.lr=0.001)#2",
    ]


def test_a_preset_of_its_own_is_its_name_and_labels_are_short_and_deterministic():
    many = [_config(0.001, "/a", modes=8, width=16, n_layers=4), _config(0.002, "/b", modes=12, width=32)]
    many[1]["model"]["n_layers"] = 2
    many[1]["seed"] = 3
    labels = config_labels(["fno-small", "fno-small"], many)
    assert labels[0] == "fno-small (model.modes=8, model.n_layers=4, model.width=16, +2 more)"
    assert labels[1] == "fno-small (model.modes=12, model.n_layers=2, model.width=32, +2 more)"
    assert config_labels(["fno-small", "fno-small"], many) == labels
    assert config_labels(["fno-small", "unet-small"], many) == ["fno-small", "unet-small"]


def test_a_key_one_config_lacks_counts_as_a_difference():
    with_seed = {**_config(0.001, "/a"), "seed": 1}
    assert config_labels(["fno-small"] * 2, [with_seed, _config(0.001, "/b")]) == [
        "fno-small (seed=1)",
        "fno-small (seed=unset)",
    ]


def test_names_and_configs_must_pair_up():
    with pytest.raises(ValueError, match="2 names for 1 configs"):
        config_labels(["a", "b"], [{}])


@pytest.mark.parametrize(
    ("ndim", "shown"),
    [
        (1, "field units × length units"),
        (2, "field units × length units²"),
        (3, "field units × length units³"),
        (None, "field units × length units^d"),
    ],
)
def test_the_volume_unit_is_written_for_the_grid(ndim, shown):
    assert registry.unit_in(registry.by_name("pdebench_frmse").unit, ndim) == shown
    assert registry.unit_in(registry.TIME_UNITS, ndim) == registry.TIME_UNITS
