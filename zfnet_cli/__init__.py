"""zfnet: reproduce Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks"
(ECCV 2014, arXiv 1311.2901 v3)."""

__version__ = "0.1.0"
