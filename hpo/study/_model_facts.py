"""Facts of the shipped spaces' models for :mod:`hpo.study._preflight`: the smallest image side each
takes, by model name and dropout use, as timm and torch of these versions build them.

Written by ``hpo.study._preflight.write_shipped_facts()``; a test rebuilds every entry and compares.
With other versions installed the table is not used: the checks build the models, once per user and
versions.
"""

TIMM = "1.0.31"
TORCH = "2.14.1"
MIN_SIZES: dict[str, int] = {
    "convnext_tiny drop_rate=1 drop_path_rate=0": 32,
    "convnext_tiny drop_rate=1 drop_path_rate=1": 32,
    "efficientnet_b0 drop_rate=1 drop_path_rate=0": 32,
    "efficientnet_b1 drop_rate=1 drop_path_rate=0": 32,
    "efficientnet_b2 drop_rate=1 drop_path_rate=0": 32,
    "efficientnet_b2 drop_rate=1 drop_path_rate=1": 32,
    "efficientnet_b3 drop_rate=1 drop_path_rate=0": 32,
    "regnety_016 drop_rate=1 drop_path_rate=0": 32,
    "resnet50 drop_rate=1 drop_path_rate=0": 32,
    "resnet50 drop_rate=1 drop_path_rate=1": 32,
    "test_resnet drop_rate=0 drop_path_rate=0": 32,
    "test_resnet drop_rate=1 drop_path_rate=1": 32,
}
