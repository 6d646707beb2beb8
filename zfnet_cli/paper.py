"""The paper's published numbers, in one place: Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks" (ECCV 2014, arXiv 1311.2901 v3). The tables, figures, the report, the
claims and the README writer read them from here, so each number is written once.

Errors and accuracies are percentages; Delta (Table 1) is the sign-disagreement measure of
:mod:`zfnet_cli.correspondence`.
"""
from __future__ import annotations

# Table 3 (architecture ablation on ImageNet 2012): variant -> (train top-1, val top-1, val top-5)
# error; the variant names are zfnet_cli.experiments.ablate.VARIANTS' keys.
TABLE3: dict[str, tuple[float, float, float]] = {
    "alexnet": (35.1, 40.5, 18.1),
    "alexnet_no_conv34": (41.8, 45.4, 22.1),
    "alexnet_no_fc7": (27.4, 40.0, 18.4),
    "alexnet_no_fc67": (27.4, 44.8, 22.4),
    "alexnet_no_conv34_fc67": (71.1, 71.3, 50.1),
    "alexnet_fc2048": (40.3, 41.7, 18.8),
    "alexnet_fc8192": (26.8, 40.0, 18.1),
    "zfnet": (33.1, 38.4, 16.5),
    "zfnet_fc2048": (38.2, 40.2, 17.6),
    "zfnet_fc8192": (22.0, 38.8, 17.0),
    "zfnet_conv512": (18.8, 37.5, 16.0),
    "zfnet_fc8192_conv512": (10.0, 38.3, 16.9),
}

# Table 2's single-net rows (val top-1, val top-5 error): the same nets as Table 3's AlexNet
# replica and ZFNet rows.
TABLE2: dict[str, tuple[float, float]] = {name: TABLE3[name][1:] for name in ("zfnet", "alexnet")}

# Table 1: mean ± std of Delta at layers 5 and 7
TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "right_eye": {"conv5": (0.067, 0.007), "fc7": (0.069, 0.015)},
    "left_eye": {"conv5": (0.069, 0.007), "fc7": (0.068, 0.013)},
    "nose": {"conv5": (0.079, 0.017), "fc7": (0.069, 0.011)},
    "random": {"conv5": (0.107, 0.017), "fc7": (0.073, 0.014)}}

# Tables 4 and 5, Fig 9 (mean per-class accuracy, std or None), Table 7 and Table 6 (excerpt).
FEWSHOT = {
    "caltech101": {"pretrained": {15: (83.8, 0.5), 30: (86.5, 0.5)},
                   "scratch": {15: (22.8, 1.5), 30: (46.5, 1.7)}},
    "caltech256": {"pretrained": {15: (65.7, None), 30: (70.6, None), 45: (72.7, None),
                                  60: (74.2, None)},
                   "scratch": {15: (9.0, None), 30: (22.5, None), 45: (31.2, None),
                               60: (38.8, None)}},
}
TABLE7 = {  # (classifier, layer) -> mean per-class accuracy; Cal-101 at 30, Cal-256 at 60
    "caltech101": {("hinge", "conv1"): 44.8, ("hinge", "conv2"): 66.2, ("hinge", "conv3"): 72.3,
                   ("hinge", "conv4"): 76.6, ("hinge", "conv5"): 86.2, ("hinge", "fc7"): 85.5,
                   ("softmax", "conv5"): 82.9, ("softmax", "fc7"): 85.4},
    "caltech256": {("hinge", "conv1"): 24.6, ("hinge", "conv2"): 39.6, ("hinge", "conv3"): 46.0,
                   ("hinge", "conv4"): 51.3, ("hinge", "conv5"): 65.6, ("hinge", "fc7"): 71.7,
                   ("softmax", "conv5"): 65.7, ("softmax", "fc7"): 72.6},
}
VOC = {"aeroplane": 96.0, "pottedplant": 52.2, "tvmonitor": 76.1}  # Table 6 (excerpt)
VOC_MEAN = 79.0
