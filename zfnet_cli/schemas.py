"""Every command's typed config, in one module that imports neither torch nor an experiment.

Each subcommand composes one of these dataclasses (``zfnet_cli.config.schema``): the YAML files
under ``configs/`` and ``key=value`` overrides only override their typed fields, and the bounds
declared here (:func:`zfnet_cli.bounds.bounded`) are checked on every composed config. Keeping
them apart from the code that runs them lets a bad key or value answer before torch loads; the
experiment and core modules import their classes from here (``zfnet_cli.model.ModelConfig``,
``zfnet_cli.experiments.train.TrainConfig``, ... still work). Print a command's composed config
with ``zfnet config COMMAND``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from zfnet_cli.bounds import DEVICE, bounded

# Values the fields below are bounded by, kept here so that checking a config needs no torch;
# the modules that act on them import them from here.
AMP_MODES = ("none", "bf16")  # zfnet_cli.engine.autocast
MAX_PIXELS = 100_000_000  # 100 megapixels: larger image files are refused (zfnet_cli.data.images)
# The names of zfnet_cli.deconv_graph.RULES, the projection rules (a test keeps the two equal).
RULE_NAMES = ("deconvnet", "guided", "gradient")
TABLE7_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")  # transfer's layers


# ---------------------------------------------------------------- which model a command reads

@dataclass
class Preprocess:
    """Overrides of the preprocessing a model comes with (``preprocess.KEY=VALUE``).

    ``None`` keeps the model's own: ours from the checkpoint (its training mean image and
    scale, its crop), torchvision's from the architecture's weights (ImageNet mean / std,
    resize 256, crop 224 for most), ImageNet's for TorchScript, pickled and factory models.
    """

    mean: Optional[list[float]] = None  # per channel, of 0..1 RGB pixels, e.g. [0.5,0.5,0.5]
    std: Optional[list[float]] = None  # per channel, of 0..1 RGB pixels
    input_size: Optional[int] = None  # side of the square the model sees (the centre crop)
    resize: Optional[int] = None  # short side before that crop; None with input_size: / 0.875


@dataclass
class ModelSource:
    """Config keys that say which model a command looks inside and how to read it (every such
    command's config has them).

    ``checkpoint`` takes: one of our checkpoints (a ``.pt`` file, a ``zfnet train`` run folder,
    ``latest``); a state dict file of any torchvision classifier, also wrapped as
    ``{"model": ...}`` / ``{"state_dict": ...}`` / with ``module.`` prefixes (its architecture
    recognised from its keys and shapes, or named with ``arch``); a TorchScript file (occlusion
    only: no deconvnet); a whole pickled model (``torch.save(model)``, only with
    ``trust_pickle=true``); or ``package.module:factory``, a function of your own code called
    with no arguments that returns the ``nn.Module`` (with ``weights=FILE``, a state dict
    loaded into it).
    """

    checkpoint: str = "latest"  # the model (see above); "latest": the newest finished train run
    arch: Optional[str] = None  # torchvision architecture of a state dict; None: recognised
    weights: Optional[str] = None  # state dict file for checkpoint=module:factory
    trust_pickle: bool = False  # allow a whole pickled model (runs code from the file)
    preprocess: Preprocess = field(default_factory=Preprocess)


# ---------------------------------------------------------------- the network (Fig 3)

@dataclass
class ModelConfig:
    """Everything that shapes the network. Defaults are the paper's ZFNet (Fig 3).

    Lists have one entry per conv layer conv1..conv5 (an entry of a dropped layer is ignored).
    """

    name: str = "zfnet"
    num_classes: Optional[int] = bounded(None, min=2)  # None: taken from the data set
    input_size: int = bounded(224, min=1)
    channels: list[int] = bounded(default_factory=lambda: [96, 256, 384, 384, 256], min=1)
    kernels: list[int] = bounded(default_factory=lambda: [7, 5, 3, 3, 3], min=1)
    strides: list[int] = bounded(default_factory=lambda: [2, 2, 1, 1, 1], min=1)
    paddings: list[int] = bounded(default_factory=lambda: [1, 0, 1, 1, 1], min=0)
    pools: list[bool] = field(default_factory=lambda: [True, True, False, False, True])
    fc_widths: list[int] = bounded(default_factory=lambda: [4096, 4096], min=1)  # fc6, fc7
    drop: list[str] = field(default_factory=list)  # subset of zfnet_cli.model.DROPPABLE (Table 3)
    pool_kernel: int = 3
    pool_stride: int = 2
    pool_ceil: bool = True  # Fig 3's sizes (110 -> 55, 26 -> 13, 13 -> 6) need ceil mode
    dropout: float = bounded(0.5, min=0.0, below=1.0)  # paper §3, on fc6 and fc7
    # Contrast normalisation after pool1 and pool2 (paper §3 says "normalized across feature
    # maps"; its constants are UNSTATED). Defaults are AlexNet's: size 5, alpha 1e-4, beta 0.75,
    # k 2, with alpha as in Krizhevsky 2012 (applied to the plain sum of squares).
    lrn: bool = True
    lrn_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 2.0
    lrn_layers: list[str] = field(default_factory=lambda: ["conv1", "conv2"])
    lrn_before_pool: bool = False  # paper: pool then norm; Krizhevsky (and pytorchcv's zfnet): norm then pool
    # Paper §3: "weights initialized to 1e-2 and biases set to 0", read as N(0, 0.01^2).
    init: str = "normal"  # "normal" (paper) or "kaiming" (a documented deviation for tiny nets)
    init_std: float = 0.01


# ---------------------------------------------------------------- the images

@dataclass
class DataConfig:
    """Where images come from. ``name`` picks the loader: ``embedded`` (generated by zfnet, see
    ``zfnet_cli/data/embedded.py``), ``imagenet`` (ImageFolder layout ``root/{train,val}/<wnid>``),
    ``packed`` (a folder written by ``zfnet prepare``, see ``zfnet_cli/data/packed.py``) or
    ``folder`` (a folder of your photos, flat or one sub-folder per class, every split the same
    images: :class:`~zfnet_cli.data.images.PhotoFolder`; read as the model reads its images,
    see :func:`zfnet_cli.data.sources.for_model`)."""

    name: str = bounded("embedded", choices=("embedded", "imagenet", "packed", "folder"))
    root: Optional[str] = None  # imagenet: the folder holding train/ and val/; packed: the pack
    image_size: int = bounded(128, min=1)  # side of the stored image (imagenet: short side resized, centre crop)
    crop: int = bounded(128, min=1)  # side fed to the model; training takes random crops (paper: 224 of 256)
    flip: bool = True  # paper §3: random horizontal flips for training
    mean: str = bounded("image", choices=("image", "channel"))  # "image": per-pixel mean image (paper §3); "channel": per-channel mean
    scale: float = bounded(1.0, above=0.0)  # multiplies mean-subtracted pixels; 1 = the paper's inputs in about [-128, 128]
    # DataLoader worker processes (file-based data) / generator processes; None: what this
    # machine has (zfnet_cli.data.images.loader_workers: its cores, at most 8)
    workers: Optional[int] = bounded(2, min=0)
    # Unreadable image files (file-based data; see zfnet_cli.data.images.UnreadableFiles): they
    # are skipped, counted and named, and the run stops once more than this fraction of a
    # split is unreadable; 0: strict, the first unreadable file stops the run.
    max_broken: float = bounded(0.01, min=0.0, max=1.0)
    cache_dir: str = "outputs/cache"  # generated images and mean images are cached here
    # embedded data only
    train_per_class: int = bounded(800, min=1)
    val_per_class: int = bounded(150, min=1)
    test_per_class: int = bounded(100, min=1)
    held_out: Optional[list[str]] = None  # None: the class set's held-out classes (transfer target)
    # "objects": the 15 hand-drawn classes; "rich": those and 90 composed ones (body x part x
    # texture), 85 pretraining and 20 held-out classes (zfnet_cli/data/embedded.py)
    class_set: str = bounded("objects", choices=("objects", "rich"))
    use: str = bounded("pretrain", choices=("pretrain", "heldout", "all"))  # "pretrain" (all but held_out), "heldout" or "all"
    seed: int = 0  # the generator's seed (separate from the training seed)

    def check(self, prefix: str = "data.") -> None:
        """Impossible combinations, one line each (called by :func:`zfnet_cli.bounds.check_bounds`)."""
        if self.crop > self.image_size:
            raise ValueError(f"{prefix}crop={self.crop} is larger than {prefix}image_size="
                             f"{self.image_size}: the crop is taken from the stored image; lower "
                             f"{prefix}crop or raise {prefix}image_size")


# ---------------------------------------------------------------- zfnet train (paper §3)

@dataclass
class OptimConfig:
    """Paper §3: SGD, lr 1e-2, momentum 0.9; the lr was annealed by hand (UNSTATED), here a step
    schedule; weight decay is UNSTATED (AlexNet's 5e-4 by default)."""

    lr: float = bounded(0.01, min=0.0)
    momentum: float = bounded(0.9, min=0.0, below=1.0)
    weight_decay: float = bounded(5e-4, min=0.0)
    milestones: list[int] = bounded(default_factory=lambda: [30, 50], min=1)  # epochs after which lr *= gamma
    gamma: float = bounded(0.1, min=0.0)
    renorm: bool = True  # paper §3: conv filters with RMS above renorm_rms are rescaled to it
    renorm_rms: float = bounded(0.1, above=0.0)


@dataclass
class TrainConfig(ModelSource):  # + arch, weights, trust_pickle, preprocess: eval_only
    """``zfnet train`` (:mod:`zfnet_cli.experiments.train`): the paper's recipe, §3."""

    BOUNDS_FIRST = ("data",)  # model.input_size follows data.crop: name data.crop when it is bad

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = bounded(70, min=1)  # paper §3: 70 epochs
    batch_size: int = bounded(128, min=1)  # global batch, split across DDP processes; paper §3: 128
    seed: int = 0
    device: str = bounded("auto", **DEVICE)  # auto: cuda when present, else cpu
    keep_epochs: list[int] = bounded(default_factory=lambda: [1, 2, 5, 10, 20, 30, 40, 64], min=1)  # Fig 4's
    resume: Optional[str] = None  # a checkpoint file, a run folder, or "latest"
    max_steps: Optional[int] = bounded(None, min=1)  # cap on steps per epoch (smoke tests, benchmarks)
    # Evaluation (see zfnet_cli.experiments.train). eval_batch_size counts crops per forward
    # pass (global, split across DDP processes): with eval_crops=10 a batch holds
    # eval_batch_size // 10 images.
    eval_batch_size: int = bounded(256, min=1)
    eval_crops: int = bounded(1, choices=(1, 10))  # 1: centre crop; 10: 4 corners + centre, each mirrored, softmax averaged
    eval_only: bool = False  # evaluate `checkpoint` on the val split, no training, no checkpoints
    eval_test: bool = False  # after the last epoch also score the final model on the test split
    checkpoint: Optional[str] = None  # eval_only: a checkpoint file, a train run folder, "latest"
    # Speed (see zfnet_cli.experiments.train); all off by default: on a CPU none of them helps.
    amp: str = bounded("none", choices=AMP_MODES)  # "bf16": autocast to bfloat16 (CUDA or CPU); loss and weights stay float32
    channels_last: bool = False  # NHWC activations and conv weights (GPU tensor-core convs)
    compile: bool = False  # torch.compile the training model (the DDP-wrapped one under DDP)
    compile_backend: str = "inductor"  # torch.compile backend; "aot_eager" / "eager" for tests
    compile_mode: Optional[str] = None  # inductor mode: None (default), "reduce-overhead", "max-autotune"
    output_root: str = "outputs"
    progress: bool = True  # tqdm bars (rank 0 only)
    plot: bool = True  # figures/curves.png at the end


# ---------------------------------------------------------------- looking inside a model (§2.1, §4)

@dataclass
class VisualizeConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet visualize``: Fig 2's top-9, Fig 4's evolution, Fig 6's filters, the cascade."""

    data: Optional[DataConfig] = None  # None: the data the checkpoint was trained on
    split: str = "val"  # Fig 2 scans the validation set
    mode: str = "top9"  # top9 (Fig 2) | evolution (Fig 4) | filters (Fig 6) | cascade
    rule: Optional[str] = bounded(None, choices=RULE_NAMES)  # None: deconv_graph.default_rule
    similarity: bool = True  # Fig 2: each seed also through another shown image (2x the projections)
    cascade_blocks: Optional[int] = bounded(None, min=1)  # cascade: blocks re-initialised at most; None: all
    layers: list[str] = field(default_factory=list)  # conv3 (or 3), layer3.1, ...; empty: all
    fmaps: list[int] = field(default_factory=list)  # feature maps to show; empty: a random subset
    maps_per_layer: int = bounded(8, min=1)  # size of the seeded random subset of maps per layer (Fig 2)
    k: int = bounded(9, min=1)  # strongest activations per map (Fig 2: 9)
    max_images: Optional[int] = bounded(None, min=1)  # scan at most this many images of the split
    batch_size: int = bounded(64, min=1)
    evolution_maps: int = bounded(4, min=1)  # maps per layer in Fig 4
    evolution_split: str = "train"  # Fig 4: strongest activation over the training set
    compare: list[str] = field(default_factory=list)  # Fig 6: train runs (or checkpoints)
    layer2_maps: int = bounded(36, min=1)  # Fig 6: layer-2 maps shown, top-1 projection each
    dead_fraction: float = 0.1  # Fig 6: a filter is dead when its RMS < this x the layer's max
    cell: int = bounded(48, min=1)  # display size of one projection or patch, pixels
    seed: int = 0  # picks the random subsets of maps
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    progress: bool = True


@dataclass
class ExploreConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet explore``: Fig 2 for every unit, as a static site."""

    data: Optional[DataConfig] = None  # None: the data the checkpoint was trained on
    split: str = "val"  # the image set scanned (Fig 2: the validation set)
    layers: list[str] = field(default_factory=list)  # conv3 (or 3), layer3.1, ...; empty: all
    k: int = bounded(9, min=1)  # strongest activations per unit (Fig 2: 9)
    max_images: Optional[int] = bounded(None, min=1)  # scan at most this many images of the split
    max_units: Optional[int] = bounded(None, min=1)  # the first N units of each layer; None: all
    batch_size: int = bounded(64, min=1)
    evolution: bool = True  # add each unit's kept-epoch projections when the run has them (Fig 4)
    rule: Optional[str] = bounded(None, choices=RULE_NAMES)  # None: deconv_graph.default_rule
    similarity: bool = True  # each seed also through another shown image (2x the projections)
    evolution_split: str = "train"  # Fig 4: strongest activation over the training set
    cell: int = bounded(64, min=8)  # tiles are stored at most this many pixels on their long side
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    progress: bool = True


@dataclass
class OccludeConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet occlude``: occlusion sensitivity, §4.2 and Fig 7."""

    images: list[str] = field(default_factory=list)  # image files and photo folders; empty: val images
    label: Optional[str] = None  # the correct class of every image (index or name)
    labels: list[str] = field(default_factory=list)  # one per image, in order (or one for all)
    size: Optional[int] = bounded(None, min=1)  # occluder side in px (UNSTATED); None: input side // 4
    stride: Optional[int] = bounded(None, min=1)  # step in px; None: size // 4
    layer: Optional[str] = None  # module or paper name; None: "layer 5" / last map before pooling
    rule: Optional[str] = bounded(None, choices=RULE_NAMES)  # panel (c); None: default_rule
    default_images: int = bounded(4, min=1)  # data-set images used when no files are given
    # the split those images and the localisation check read: tune on val, read claims on test
    split: str = bounded("val", choices=("val", "test"))
    data: Optional[DataConfig] = None  # None: the data the checkpoint was trained on
    localise: bool = False  # also run the localisation check (embedded data, or boxed photos)
    localise_images: int = bounded(100, min=1)
    batch_size: int = bounded(128, min=1)  # occluder positions per forward pass (method=full)
    # "incremental": recompute each layer only where the occluder reaches it (exact, Krypton);
    # "full": the whole model per position; "auto": incremental where it is estimated faster
    method: str = bounded("auto", choices=("auto", "incremental", "full"))
    memory_budget_mb: int = bounded(256, min=1)  # incremental path: MiB of per-position activations per chunk
    max_pixels: int = bounded(MAX_PIXELS, min=1)  # larger image files are refused (decompression-bomb guard)
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    progress: bool = True


@dataclass
class InvarianceConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet invariance``: Fig 5, features under translation, scale and rotation."""

    images: list[str] = field(default_factory=list)  # files, photo folders; empty: embedded images
    labels: list[str] = field(default_factory=list)  # true class per file (index or name); empty: predicted
    n_images: int = bounded(5, min=1)  # the paper's 5
    # the split of the data set's images: val to tune, test to read the claims on
    split: str = bounded("val", choices=("val", "test"))
    method: str = bounded("image", choices=("image", "render"))  # "image" (whole image, the paper's) or "render" (embedded only)
    layers: list[str] = field(default_factory=lambda: ["conv1", "fc7"])  # Fig 5's layer 1 and 7
    steps_translate: int = bounded(13, min=1)
    steps_scale: int = bounded(9, min=1)
    steps_rotate: int = bounded(36, min=1)
    data: Optional[DataConfig] = None
    max_pixels: int = bounded(MAX_PIXELS, min=1)
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    progress: bool = True


@dataclass
class CorrespondConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet correspond``: Fig 8 and Table 1, object parts across images."""

    images: list[str] = field(default_factory=list)  # files (needs parts_file); empty: embedded faces
    parts_file: Optional[str] = None
    n_images: int = bounded(5, min=2)  # the paper's 5 dog images
    # the split of the embedded faces: val to tune, test to read the claims on
    split: str = bounded("val", choices=("val", "test"))
    parts: list[str] = field(default_factory=lambda: ["right_eye", "left_eye", "nose"])
    mask_size: Optional[int] = bounded(None, min=1)  # square side in px (UNSTATED); None: input side // 6
    draws: int = bounded(10, min=1)  # random draws per row of Table 1
    jitter: int = bounded(2, min=0)  # px jitter of the part squares between draws
    layers: list[str] = field(default_factory=lambda: ["conv5", "fc7"])  # Table 1's layers 5, 7
    seed: int = 0
    data: Optional[DataConfig] = None
    max_pixels: int = bounded(MAX_PIXELS, min=1)
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    progress: bool = True


@dataclass
class LayersConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet layers``: the layers a command can select."""

    device: str = bounded("cpu", **DEVICE)  # one forward pass: the CPU is enough
    output_root: str = "outputs"  # where checkpoint=latest looks


# ---------------------------------------------------------------- ablation and transfer (§5)

@dataclass
class AblateConfig:
    """``zfnet ablate``: Table 3, each variant a ``zfnet train`` run, §5.1."""

    variants: Optional[list[str]] = None  # names from VARIANTS; None: all of Table 3, in order
    # The model preset each base means: the small CPU presets by default, alexnet / zfnet for
    # the paper (experiment=paper).
    presets: dict[str, str] = field(default_factory=lambda: {"alexnet": "small_alexnet",
                                                             "zfnet": "small"})
    train: list[str] = field(default_factory=list)  # `zfnet train` overrides for every variant
    train_extra: list[str] = field(default_factory=list)  # appended after `train` (CLI: -t)
    resume: Optional[str] = None  # an ablation folder, or "latest", to continue in place
    seeds: int = bounded(1, min=1)  # train each variant with seeds S .. S+seeds-1 (S: the train config's seed)
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    plot: bool = True


@dataclass
class TransferConfig(ModelSource):  # + checkpoint, arch, weights, trust_pickle, preprocess
    """``zfnet transfer``: frozen features on new data sets, §5.2, Tables 4-7."""

    target: str = "embedded"  # embedded (held-out classes), caltech101, caltech256, voc
    root: Optional[str] = None  # the target's data root (not for embedded)
    task: str = "auto"  # fewshot | multilabel | auto (voc: multilabel, others: fewshot)
    shots: list[int] = bounded(default_factory=lambda: [1, 2, 5, 10, 20], min=1)  # training images per class
    folds: int = bounded(5, min=1)  # paper §5.2: 5 random folds
    test_per_class: Optional[int] = bounded(50, min=1)  # paper: up to 50 per class on Caltech-101; null: all the rest
    on_short: str = bounded("error", choices=("error", "skip"))  # a class with fewer than shots + 1 images: error | skip (reported)
    pool_per_class: int = bounded(80, min=2)  # embedded: images per held-out class that the folds draw from
    clutter: str = bounded("drop", choices=("drop", "keep"))  # caltech256: drop the 257.clutter class (common practice) or keep it
    layer: str = "fc7"  # the frozen layer the new classifier sits on (paper: layers 1-7 kept)
    loss: str = bounded("softmax", choices=("softmax", "hinge"))  # the new classifier (paper: softmax)
    weight_decay: float = bounded(1e-3, min=0.0)  # L2 on the new classifier (UNSTATED in the paper)
    max_iter: int = bounded(500, min=1)  # L-BFGS iterations at most
    per_layer: bool = True  # Table 7: a classifier on each layer
    per_layer_shots: Optional[int] = bounded(None, min=1)  # null: the largest of shots (paper: 30 / 60)
    layers: list[str] = field(default_factory=lambda: list(TABLE7_LAYERS))
    classifiers: list[str] = field(default_factory=lambda: ["hinge", "softmax"])  # SVM, softmax
    pool: str = "max2x2"  # how conv maps become vectors (UNSTATED; see transfer.pool_feature_map)
    scratch: bool = True  # also train the architecture from scratch on each fold
    scratch_epochs: int = bounded(40, min=1)  # passes over the fold's training images (lr / 10 for the last quarter)
    scratch_batch: int = bounded(64, min=1)  # at most; fewer images make one batch
    scratch_lr: Optional[float] = bounded(None, min=0.0)  # null: the pretrained run's optim.lr
    batch_size: int = bounded(128, min=1)  # images per forward pass when extracting features
    workers: Optional[int] = bounded(2, min=0)  # DataLoader processes decoding target images; None: the machine's cores
    # Unreadable target images are skipped, counted and named; more than this fraction of the
    # target's images stops the run (0: strict). See zfnet_cli.data.images.UnreadableFiles.
    max_broken: float = bounded(0.01, min=0.0, max=1.0)
    device: str = bounded("auto", **DEVICE)
    seed: int = 0  # fold k uses seed + k
    output_root: str = "outputs"
    progress: bool = True
    plot: bool = True
    # target=embedded with a model not trained on the embedded data (zfnet_cli.experiments.transfer)
    class_set: str = bounded("objects", choices=("objects", "rich"))
    embedded_size: int = bounded(96, min=8)  # px the held-out images are drawn at
    cache_dir: str = "outputs/cache"  # where those drawn images are cached
    scratch_checkpoint: Optional[str] = None  # our checkpoint whose architecture the scratch nets take


# ---------------------------------------------------------------- data packs and the report

@dataclass
class PrepareConfig:
    """``zfnet prepare``: ImageNet decoded once into memory-mappable shards."""

    dataset: str = "imagenet"  # the source layout: ImageNet's ROOT/{train,val}/<wnid>/*.JPEG
    root: Optional[str] = None  # required: the folder holding train/ and val/
    out: Optional[str] = None  # the pack folder; None: <output_root>/packed/<dataset>_<image_size>
    image_size: int = bounded(256, min=1)  # paper §3: short side to 256, centre crop 256x256
    shard_size: int = bounded(2048, min=1)  # source images per shard file (2048 x 256 px = 403 MB)
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    workers: int = bounded(0, min=0)  # decoding processes; 0: every core
    chunk_size: int = bounded(16, min=1)  # images per task handed to a worker
    verify: bool = True  # re-read every shard at the end: sha256 and counts
    # the fraction of a split's files that may be unreadable (left out, listed in the manifest);
    # one more stops the preparation, as data.max_broken stops a run. 0: strict
    max_broken: float = bounded(0.01, min=0.0, max=1.0)
    progress: bool = True
    output_root: str = "outputs"


@dataclass
class ReportConfig:
    """``zfnet report``: one report of a whole reproduction."""

    root: str = "outputs"  # the output root whose runs are reported
    title: str = "Zeiler & Fergus 2014, reproduced"
    output_root: str = "outputs"  # the report's own run folder goes under here
