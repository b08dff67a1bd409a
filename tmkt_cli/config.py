"""Recipe schema: typed dataclasses, strict YAML loading, ``--set a.b=c`` overrides.

The dataclasses below are the single source of every recipe key's type, default, allowed range
and help text (the docstring under each attribute). ``docs/recipes.md`` is generated from them
(``tmkt recipe-doc``) and the loader refuses anything they do not describe.

A recipe is one YAML file with shared keys (``name``, ``seed``, ``paths``) and one section per
stage. Sections a stage does not read are ignored by that stage and by its config hash.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from tmkt_cli import safe_yaml
from tmkt_cli.errors import TmktError


def param(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None,
          volatile: bool = False, factory=None):
    """A recipe field with an allowed range.

    ``volatile`` marks keys that change how a run executes but not what it computes (worker
    counts, logging cadence, the device): they are left out of the config hash, so changing
    them never invalidates a finished or resumable run.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "volatile": volatile}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

@dataclass
class PathsConfig:
    runs: str = "runs"
    """Root of run folders: each stage writes to ``<runs>/<name>/seed<seed>/<stage>/``."""
    dataset: str = ""
    """Folder of the prepared dataset (``dataset.h5`` + manifest). ``prepare`` writes it, the
    training stages read it. Empty: ``prepared/<prepare.dataset>-T<time_steps>-<size>px``."""


@dataclass
class EmulatorConfig:
    """tmkt's event-camera emulator (used by the ``digits`` and ``images`` datasets)."""

    canvas: int = param(34, ge=4)
    """Side of the square sensor the image moves on, in pixels."""
    image_size: int = param(28, ge=2)
    """Side the image is resized to before it is placed on the canvas."""
    duration_ms: float = param(300.0, gt=0)
    """Length of one recording."""
    saccades: int = param(3, ge=1)
    """Number of triangular saccades (out-and-back eye movements) per recording."""
    amplitude_px: float = param(2.5, ge=0)
    """Largest displacement of the image along a saccade, in pixels."""
    sample_rate_hz: float = param(1000.0, gt=0)
    """Rate at which the moving image is rendered; events get times within each sample."""
    contrast_threshold: float = param(0.2, gt=0)
    """Log-intensity change that fires an event (mean over pixels)."""
    threshold_sigma: float = param(0.03, ge=0)
    """Standard deviation of the per-pixel contrast threshold (fixed per recording)."""
    refractory_ms: float = param(1.0, ge=0)
    """A pixel cannot fire again within this time after an event."""
    noise_rate_hz: float = param(0.5, ge=0)
    """Background (shot) noise events per pixel per second, random polarity."""
    recordings_per_image: int = param(1, ge=1)
    """Independent recordings (saccade offsets and noise) made of each image."""
    seed: int = 0
    """Seed of the emulator; recording k of image i uses the stream (seed, i, k)."""
    sensor_size: int = param(0, ge=0)
    """Side of the pixel array, when coarser than the canvas: each sensor pixel averages the
    canvas area it covers, so events come at this resolution. 0: the canvas itself."""
    event_keep_fraction: float = param(1.0, gt=0, le=1)
    """Each signal event is kept with this probability (a sensor that misses events; fewer
    events per recording). 1: keep all."""
    hot_pixel_fraction: float = param(0.0, ge=0, le=1)
    """Fraction of the sensor's pixels that are hot: the same pixels in every recording."""
    hot_pixel_rate_hz: float = param(0.0, ge=0)
    """Events per second of each hot pixel (Poisson, one fixed polarity per hot pixel)."""
    fixed_pattern: bool = False
    """Draw the per-pixel threshold mismatch once per sensor (the same in every recording,
    as in a real chip) instead of once per recording."""


@dataclass
class PrepareConfig:
    dataset: str = "digits"
    """Dataset name: digits, glyphs, images, ncaltech101, cepdvs, cifar10dvs, nmnist, nomniglot,
    dvsgesture."""
    root: str = ""
    """Raw data: a folder holding the extracted data or the original archives (layouts in
    docs/datasets.md). Not needed for ``digits`` and ``glyphs``."""
    time_steps: int = param(10, ge=1)
    """T, the number of frames each recording is integrated into."""
    size: int = param(48, ge=1)
    """Frames and images are resized (bilinear) to size x size."""
    split_by: Literal["time", "number", "time_fork"] = "time"
    """``time``: T equal time bins; ``number``: T bins of equal event count; ``time_fork``:
    the slicer of the tonic fork KT uses (windows of t_last // T from the first timestamp)."""
    align_corners: bool = False
    """Bilinear frame resize with corner pixels aligned (KT's code) or half-pixel centres."""
    sensor_extent: Literal["declared", "observed", "observed_shifted"] = "declared"
    """Frame extent before the resize: the dataset's sensor, the recording's own events
    (max + 1), or those after shifting x and y to start at 0 (KT's N-Caltech101 reader)."""
    workers: int = param(1, ge=1, volatile=True)
    """Processes that read and integrate recordings."""
    flush_every: int = param(64, ge=1, volatile=True)
    """Samples written between HDF5 flushes (the resume granularity after a kill)."""
    emulator: EmulatorConfig = field(default_factory=EmulatorConfig)
    """Settings of the event-camera emulator."""


@dataclass
class DataConfig:
    """How training and evaluation read the prepared dataset."""

    event_fraction: float = param(1.0, gt=0, le=1)
    """Fraction of the event training recordings used (stratified per class). Images are
    always all used: scarce events and plentiful images is the setting these methods target."""
    subset_seed: int = param(-1, ge=-1)
    """Seed of the event subset; -1 uses the recipe's ``seed`` so the subset varies with it."""
    subset_draw: Literal["nested", "independent"] = "nested"
    """How the event subset is drawn: ``nested`` (each fraction's recordings contain every
    smaller fraction's at the same subset seed, so a data-efficiency curve adds recordings
    instead of redrawing them) or ``independent`` (a fresh draw per fraction: tmkt before
    issue 25; the subsets of 1% and 2% shared one or two recordings)."""
    static_input: Literal["v", "grey"] = "v"
    """Static image to network input: HSV V channel (KT's choice) or grey, repeated to
    [T, 2, H, W]."""
    pairing: Literal["class", "instance"] = "class"
    """Static partner of an event sample: a random training image of the same class, redrawn
    every time (``class``), or the recording's own image where the dataset has one."""
    val_fraction: float = param(0.0, ge=0, lt=1)
    """Fraction of the training split held out for validation (per class, whole groups of
    recordings of one source image), on which ``best.pt`` is then chosen; 0: no validation
    split, and ``best.pt`` is the best on the test split (optimistic, KT's way)."""
    sampler: Literal["uniform", "class_balanced"] = "uniform"
    """Training order: a permutation of the training split each epoch (``uniform``), or as
    many draws with replacement, each class equally likely (``class_balanced``, KT's
    WeightedRandomSampler on N-Caltech101)."""
    crop_padding: int = param(4, ge=0)
    """Random crop with this zero padding (0 disables)."""
    hflip: bool = True
    """Random horizontal flip."""
    rotation: float = param(0.0, ge=0, le=180)
    """Random rotation in degrees, uniform in [-rotation, rotation] (0 disables)."""
    augment_static: bool = True
    """Augment the static partners of event samples like the event frames (false: KT's code,
    which only resizes and converts its static images)."""
    num_workers: int | Literal["auto"] = param("auto", ge=0, volatile=True)
    """DataLoader worker processes; ``auto``: on a GPU the cores per training process less
    one (at most 8), on the CPU 0 (workers only compete with the step for the cores)."""
    in_memory: bool = param(False, volatile=True)
    """Read the whole HDF5 split into memory once (fast for small datasets)."""


@dataclass
class ModelConfig:
    backbone: str = "vggsnn"
    """Spiking backbone from the registry: vggsnn, resnet18, scnn, digitsnet."""
    tau: float = param(2.0, gt=1)
    """LIF membrane time constant."""
    threshold: float = param(0.5, gt=0)
    """LIF firing threshold (hard reset to 0)."""
    surrogate: Literal["atan", "sigmoid", "piecewise_quadratic", "rectangular"] = "atan"
    """Surrogate gradient of the spike function (piecewise_quadratic with alpha 2 is KT's
    QGateGrad; rectangular with alpha 1 is its BackEIGateGrad)."""
    surrogate_alpha: float = param(2.0, gt=0)
    """Sharpness of the surrogate gradient."""
    detach_reset: bool = False
    """Do not backpropagate through the reset."""
    fire: Literal["ge", "gt"] = "ge"
    """Spike where the charged potential H >= threshold (``ge``, spikingjelly) or H >
    threshold (``gt``, KT's BrainCog neuron)."""
    norm: Literal["pooled", "per_step"] = "pooled"
    """BatchNorm statistics over all T x B frames of a batch (``pooled``) or over the B
    samples of each time step with running statistics updated T times per stream
    (``per_step``, KT's code)."""
    feature: Literal["charge", "membrane"] = "charge"
    """Feature map the methods align (CKA, MAG, MRP): the tap's potential before firing
    (``charge``) or after firing and reset (``membrane``, KT's code)."""
    heads: Literal["separate", "shared", "residual"] = "separate"
    """Output layers of the two streams: one each (``separate``, KT's VGG-SNN and ResNet-18),
    one for both (``shared``, KT's N-Omniglot SCNN), or the event head as the static head
    plus a learned correction that starts at zero (``residual``: initialised from the static
    head and tied to it; weight decay pulls the correction back to zero)."""
    test_head: Literal["event", "static", "validation"] = "event"
    """The head that predicts events (the logged accuracy, the manifest's ``test_acc``,
    ``best.pt``'s choice, ``tmkt eval``, ``tmkt report``): ``event`` (KT's), ``static``, or
    ``validation``: at every evaluation the head with the higher top-1 on the run's own
    validation split, the event head on a tie or without a validation split (a one-head run
    has nothing to choose). The other head's accuracy on the same events is logged beside it
    (``acc_static_head`` / ``acc_event_head``). docs/methods.md, "Which head predicts"."""


THREADS_DEFAULT = 1
"""``train.threads``' default, chosen by measurement (docs/performance.md, "Threads")."""


@dataclass
class TrainConfig:
    """The training engine: shared by train-tmkt, pretrain-ann and distill."""

    epochs: int = param(30, ge=0)
    """Passes over the event training split (the training images for pretrain-ann);
    0: train for exactly ``max_steps`` steps, whatever the split's size."""
    max_steps: int = param(0, ge=0)
    """Stop after this many optimizer steps (0: run all epochs). With ``epochs: 0`` a fixed
    step budget, which keeps runs on 5% and 100% of the data comparable."""
    min_steps: int = param(0, ge=0)
    """With a budget in epochs, train at least this many optimizer steps (0: no floor): the
    budget then grows with the data from where ``epochs`` passes exceed the floor, and a
    split of one batch still gets the floor's steps (``max_steps`` still caps)."""
    eval_every_steps: int = param(0, ge=0)
    """Evaluate (and checkpoint) every N steps and at the end; 0: at the end of every epoch."""
    batch_size: int = param(64, ge=1)
    """Samples per optimizer step (global, over all processes)."""
    drop_last: bool = True
    """Drop each epoch's last partial batch (KT's training loaders, ``drop_last=True``); a split
    smaller than one batch is still one batch. false: train on the partial batch too (one of a
    single sample is always dropped). A last batch of a few samples costs BatchNorm and the
    gradient dearly: docs/methods.md, "The last partial batch"."""
    lr: float = param(5e-3, gt=0)
    """Base learning rate; with ``lr_scaling`` the rate used is lr x batch_size / 1024."""
    lr_scaling: bool = True
    """Apply the linear scaling rule lr x batch_size / 1024 (KT's setting)."""
    weight_decay: float = param(0.01, ge=0)
    """AdamW weight decay."""
    weight_decay_exclude_1d: bool = False
    """No weight decay on 1-D parameters and biases (BN, biases, eta): timm's optimizer
    factory as KT's code calls it."""
    schedule: Literal["warmup_cosine", "timm_cosine", "timm_step"] = "warmup_cosine"
    """``warmup_cosine``: per-step linear warm-up to the peak, cosine to ``min_lr_ratio``.
    ``timm_cosine`` / ``timm_step``: timm's epoch-wise schedules with KT's arguments (warm-up
    from ``warmup_lr``, cosine to ``min_lr``, or decay by ``decay_rate`` every
    ``decay_epochs``)."""
    warmup_epochs: float = param(5.0, ge=0)
    """Linear warm-up length before the cosine decay."""
    warmup_steps: int = param(0, ge=0)
    """Warm-up length in steps; when > 0 it replaces ``warmup_epochs`` (for step budgets)."""
    min_lr_ratio: float = param(0.0, ge=0, le=1)
    """Final learning rate as a fraction of the peak (``warmup_cosine``)."""
    warmup_lr: float = param(1e-6, ge=0)
    """Learning rate at the start of the warm-up (timm schedules; KT: 1e-6)."""
    min_lr: float = param(1e-5, ge=0)
    """Final learning rate of ``timm_cosine`` (KT: 1e-5)."""
    decay_epochs: float = param(30.0, gt=0)
    """``timm_step``: epochs between decays (KT's N-Omniglot run: 40)."""
    decay_rate: float = param(0.1, gt=0, le=1)
    """``timm_step``: factor applied at each decay."""
    grad_clip: float = param(0.0, ge=0)
    """Clip the global gradient norm to this value (0: off)."""
    amp: Literal["off", "bf16", "fp16"] = "off"
    """Mixed precision: autocast dtype (fp16 adds a loss scaler)."""
    device: str = param("auto", volatile=True)
    """auto (CUDA when present), cpu, cuda, cuda:N."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (slower on GPU, bitwise repeatable); off, cuDNN
    benchmarks its convolution algorithms once per shape and keeps the fastest."""
    threads: int = param(THREADS_DEFAULT, ge=0, volatile=True)
    """torch's intra-op CPU threads in each training process (0: torch's default, one per
    core). One is fastest on a shared or small machine (docs/performance.md)."""
    sync_bn: bool = False
    """Distributed runs: synchronise BatchNorm statistics across GPUs (SyncBatchNorm)."""
    channels_last: bool = False
    """Store conv weights (and so activations) in channels-last layout: faster convs with
    tensor cores on recent GPUs under AMP; little effect on the CPU."""
    compile: bool = False
    """torch.compile the network (``nn.Module.compile``): slower first steps, faster later
    ones on GPUs; needs a C++ compiler on the CPU."""
    checkpoint_every_steps: int = param(0, ge=0, volatile=True)
    """Also checkpoint every N steps (0: only at the end of each epoch)."""
    log_every_steps: int = param(10, ge=1, volatile=True)
    """Steps between metrics.jsonl / TensorBoard training records."""
    progress_every_s: float = param(30.0, ge=0, volatile=True)
    """Where no progress bar is drawn (output to a pipe or a SLURM log), print one plain line
    (step/total, epoch, loss, samples/s, ETA) every 1% of the run or every this many seconds,
    whichever comes later (0: every 1%). ``progress`` records in metrics.jsonl carry the same
    figures every 1% of the run, on a terminal too. The loss is the last logged step's
    (``log_every_steps``)."""
    grad_noise_window: int = param(0, ge=0)
    """Record gradient noise (variance of mini-batch gradients) over windows of N steps
    (0: off). Costs one gradient copy per step."""
    grad_share_every: int = param(0, ge=0)
    """Every N steps, record the norm of each loss term's gradient on the trunk and its share
    of their sum (``grad_share`` records in metrics.jsonl; 0: off). Costs one extra backward
    pass per loss term at those steps."""


@dataclass
class MethodConfig:
    """What train-tmkt optimises. Switches left at ``null`` take the method's default
    (see docs/methods.md); the resolved values are printed by --dry-run and saved."""

    name: Literal["event_only", "finetune", "kt", "tmkt", "static_only"] = "tmkt"
    """event_only (TET on events), finetune (static then events), kt, tmkt; static_only: the
    SNN on the static training images alone (repeated over T, static head), tested on the
    static test images: what the images can teach this network (the headroom measure).
    static_only needs ``model.test_head: static``."""
    tsm: bool | None = None
    """Time-step mixup stream (static prefix, event suffix). tmkt: on."""
    sliding_replacement: bool | None = None
    """KT's whole-sequence replacement with P = min(1, (i/I)^3). kt: on."""
    mag: bool | None = None
    """Modality-aware guidance: per-frame static/event classification. tmkt: on."""
    mrp: bool | None = None
    """Mix-ratio perception: regress the realised event fraction. tmkt: on."""
    domain_alignment: bool | None = None
    """CKA alignment of penultimate membrane potentials. kt, tmkt: on."""
    str_weights: bool | None = None
    """Learnable per-step weights sigma(eta_t) in L_DA and L_e. kt: on; tmkt: off."""
    tet: bool = True
    """TET loss (per-step CE plus MSE to the threshold) instead of CE on mean logits."""
    tet_lambda: float = param(1e-3, ge=0, le=1)
    """Weight of the MSE term in TET."""
    da_weight: float = param(0.5, ge=0)
    """Weight of L_DA."""
    mag_weight: float = param(0.1, ge=0)
    """Weight of the MAG loss."""
    mrp_weight: float = param(0.1, ge=0)
    """Weight of the MRP loss."""
    mix_ratio: float = param(0.5, ge=0, le=1)
    """Target mixup ratio r_m (expected fraction of event frames in the TSM stream)."""
    mix_schedule: Literal["constant", "linear", "cubic", "step"] = "cubic"
    """How r_m moves from ``mix_ratio_start`` to ``mix_ratio`` over training."""
    mix_ratio_start: float = param(0.0, ge=0, le=1)
    """r_m at the start of training (ignored by ``constant``)."""
    mix_step_at: float = param(0.5, ge=0, le=1)
    """Fraction of training at which ``step`` jumps to ``mix_ratio``."""
    finetune_static_epochs: float = param(0.5, gt=0, lt=1)
    """finetune: fraction of the epochs trained on static sequences before events."""
    equal_compute: bool = False
    """event_only: twice the event batch at the same learning rate, so it sees as many
    samples per step as the two-stream methods (a fair-compute baseline)."""


@dataclass
class PretrainAnnConfig:
    backbone: str = "vgg"
    """ANN teacher from the registry: vgg (the VGG-SNN layout with ReLU), resnet18, or the
    layout of another student backbone with ReLU (digitsnet, scnn)."""
    init_weights: str = ""
    """Optional weights file to start from (e.g. an ImageNet checkpoint on disk)."""
    input: Literal["static", "rgb"] = "static"
    """The teacher's input: the student's static input (2 planes, ``data.static_input``) or
    the colour image (3 channels, CKD's method figure). Distillation feeds it the same."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=1e-2))
    """Engine settings for the teacher."""


@dataclass
class DistillConfig:
    teacher: str = ""
    """Teacher run folder. Empty: ``<runs>/<name>/seed<seed>/pretrain-ann``."""
    temperature: float = param(4.0, gt=0)
    """KD temperature."""
    kd_weight: float = param(1.0, ge=0)
    """Scale of W L_KD."""
    switch_at: float = param(0.5, ge=0, le=1)
    """Fraction of training where W switches from 1 (phase I) to 0 (phase II)."""
    steepness: float = param(50.0, gt=0)
    """Steepness of the switch: W = 1 - sigmoid(steepness * (progress - switch_at))."""
    sliding_replacement: bool = True
    """Replace whole static sequences by event sequences with P = min(1, (i/I)^3)."""
    domain_alignment: bool = True
    """CKA alignment of the two streams' penultimate membrane potentials."""
    str_weights: bool = True
    """Learnable per-step weights sigma(eta_t) in L_DA and the event loss."""
    da_weight: float = param(1.0, ge=0)
    """Weight of L_DA (CKD's total loss adds it with weight 1)."""
    tet: bool = True
    """TET loss on both heads (otherwise CE on time-averaged logits)."""


@dataclass
class EvalConfig:
    source: Literal["train-tmkt", "distill", "pretrain-ann"] = "train-tmkt"
    """Which stage of this recipe's run to evaluate: an SNN (train-tmkt, distill) on the event
    test split, or the ANN teacher (pretrain-ann) on the test images."""
    checkpoint: Literal["best", "last", "best_test"] = "last"
    """Which checkpoint of the run: ``last``; ``best`` (chosen on the validation split when the
    run has one, else on the test split); ``best_test`` (chosen on the test split: optimistic,
    the published numbers' way). The eval folder is keyed by it (``eval``, ``eval-best``, ...)."""
    batch_size: int = param(64, ge=1)
    """Evaluation batch size."""
    energy_ac_pj: float = param(0.9, gt=0)
    """Energy of one accumulate (SNN synaptic op), pJ (45 nm, Horowitz 2014)."""
    energy_mac_pj: float = param(4.6, gt=0)
    """Energy of one multiply-accumulate (ANN op), pJ (45 nm, Horowitz 2014)."""


@dataclass
class CamConfig:
    kind: Literal["gradcam", "sam"] = "gradcam"
    """Grad-CAM (gradients averaged over time and space) or gradient-free spike activation map."""
    source: Literal["", "train-tmkt", "distill"] = ""
    """Which stage of this recipe's run to explain (empty: ``eval.source``)."""
    checkpoint: Literal["", "best", "last"] = ""
    """Which checkpoint of that run, and of a baseline run folder (empty: ``eval.checkpoint``)."""
    layer: str = ""
    """Module name of the layer to explain (empty: the last spiking layer with a spatial map,
    the penultimate layer of the network)."""
    sam_gamma: float = param(0.5, gt=0)
    """SAM: decay of a spike's contribution with the time since it, exp(-gamma dt)."""
    baseline: str = ""
    """Run folder or checkpoint of the baseline model drawn beside the model under study."""
    samples: list[int] = param(factory=list)
    """Test-split indices to draw. Empty (and ``classes`` empty): chosen for you, from up to
    ``max_classes`` classes spread over the dataset, for each a correctly and a wrongly
    classified sample of the model under study where both exist."""
    classes: list[str | int] = param(factory=list)
    """Alternatively, draw the first test sample of each of these classes (class names;
    numbers are read as names, so ``[3, 7]`` means the classes named "3" and "7")."""
    max_classes: int = param(10, ge=1)
    """How many classes the automatic choice spreads over."""


@dataclass
class Recipe:
    name: str = ""
    """Experiment name. Empty: derived from the recipe path (``digits/tmkt.yaml`` -> digits-tmkt)."""
    variant: str = "auto"
    """Sub-folder of a variant of the recipe: runs live at
    ``<runs>/<name>/<variant>/seed<seed>/``. ``auto`` names it after the ``--set`` overrides
    that change what training computes (``--set data.event_fraction=0.05`` ->
    ``event_fraction-0.05``), so a variant never collides with the recipe's own run; empty
    (or no such override) gives ``<runs>/<name>/seed<seed>/``; other text names it by hand."""
    seed: int = param(42, ge=0)
    """Seeds Python, NumPy, torch, data order, augmentation and the method's random draws."""
    base: str = ""
    """Another recipe (path relative to this one) whose values this one overrides."""
    paths: PathsConfig = field(default_factory=PathsConfig)
    """Where artifacts live."""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """tmkt prepare: raw recordings and images into HDF5."""
    data: DataConfig = field(default_factory=DataConfig)
    """Loading the prepared dataset for training and evaluation."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The spiking network."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Engine settings of the SNN stages (train-tmkt, distill)."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """tmkt train-tmkt: method and its components."""
    pretrain_ann: PretrainAnnConfig = field(default_factory=PretrainAnnConfig)
    """tmkt pretrain-ann: the ANN teacher."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """tmkt distill: CKD."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """tmkt eval."""
    cam: CamConfig = field(default_factory=CamConfig)
    """tmkt cam."""

    # -- derived locations -------------------------------------------------------------------
    def dataset_dir(self) -> Path:
        if self.paths.dataset:
            return Path(self.paths.dataset)
        p = self.prepare
        return Path("prepared") / f"{p.dataset}-T{p.time_steps}-{p.size}px"

    def run_root(self) -> Path:
        variant = () if self.variant in ("", "auto") else (self.variant,)
        return Path(self.paths.runs, self.name, *variant, f"seed{self.seed}")

    def stage_dir(self, stage: str) -> Path:
        return self.run_root() / stage

    def eval_dir(self) -> Path:
        """``eval/`` for the recipe's train-tmkt run, ``eval-<source>/`` for a distill or
        pretrain-ann run, so evaluating a student and its teacher never share a folder."""
        return self.stage_dir(eval_folder_name(self.eval.source, self.eval.checkpoint))


def eval_folder_name(source: str, checkpoint: str = "last") -> str:
    """``eval`` for a train-tmkt run's last checkpoint, ``eval-<source>`` for a distill or
    pretrain-ann run; another checkpoint than ``last`` adds its name (``eval-best``)."""
    name = "eval" if source == "train-tmkt" else f"eval-{source}"
    if checkpoint != "last":  # each evaluated checkpoint its own folder
        name += f"-{checkpoint.replace('_', '-')}"
    return name


# Which sections each stage reads: they, and only they, enter its config hash.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare",),
    "train-tmkt": ("seed", "data", "model", "train", "method"),
    "pretrain-ann": ("seed", "data", "pretrain_ann"),
    "distill": ("seed", "data", "model", "train", "distill"),
    "eval": ("data", "eval"),
    "cam": ("data", "cam"),
}

# Keys inside those sections that a stage does not read: left out of its hash, so e.g. the
# CKD teacher (images only) is not retrained when the fraction of event recordings changes.
STAGE_IGNORED_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain-ann": ("data.event_fraction", "data.subset_seed", "data.subset_draw",
                     "data.pairing"),
    # where the teacher lives is not configuration: its identity is the input hash
    "distill": ("distill.teacher",),
}

# Method defaults for the switches left at null (docs/methods.md explains each choice).
METHOD_DEFAULTS: dict[str, dict[str, bool]] = {
    "event_only": dict(tsm=False, sliding_replacement=False, mag=False, mrp=False,
                       domain_alignment=False, str_weights=False),
    "finetune": dict(tsm=False, sliding_replacement=False, mag=False, mrp=False,
                     domain_alignment=False, str_weights=False),
    "kt": dict(tsm=False, sliding_replacement=True, mag=False, mrp=False,
               domain_alignment=True, str_weights=True),
    # TMKT leaves the STR weights open; with them the event loss is scaled by
    # 1 - sigma(eta_t) ~ 0.27 from the start, which slows the event head (docs/methods.md).
    "tmkt": dict(tsm=True, sliding_replacement=False, mag=True, mrp=True,
                 domain_alignment=True, str_weights=False),
    "static_only": dict(tsm=False, sliding_replacement=False, mag=False, mrp=False,
                        domain_alignment=False, str_weights=False),
}


def resolve_method(method: MethodConfig) -> MethodConfig:
    """Fill the switches left at null with the method's defaults."""
    defaults = METHOD_DEFAULTS[method.name]
    values = {k: (defaults[k] if getattr(method, k) is None else getattr(method, k))
              for k in defaults}
    return dataclasses.replace(method, **values)


def trains_both_heads(method: MethodConfig, distilled: bool = False) -> bool:
    """Whether a run trains the static head too (a static stream through the trunk: KT,
    TMKT, or a CKD student): only then is that head's accuracy on events worth reading, or
    choosing. event_only and finetune train the event head alone. ``method`` as a loaded
    recipe holds it (its switches resolved)."""
    return bool(method.tsm or method.sliding_replacement or method.domain_alignment
                or distilled)


# --------------------------------------------------------------------------------------------
# Field documentation (attribute docstrings)
# --------------------------------------------------------------------------------------------

@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right after each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {describe_type(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def iter_fields(cls: type = Recipe, prefix: str = ""):
    """Yield (dotted key, type, default, doc, metadata) for every leaf key of the schema."""
    docs = field_docs(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key + ".")
        else:
            yield key, tp, getattr(instance, f.name), docs.get(f.name, ""), f.metadata


_NO_DEFAULT = object()


def schema_default(key: str) -> Any:
    """The schema's default of a dotted recipe key (a sentinel no value equals if the key is
    unknown)."""
    defaults = _schema_defaults()
    return defaults.get(key, _NO_DEFAULT)


@cache
def _schema_defaults() -> dict[str, Any]:
    return {key: to_dict(default) if dataclasses.is_dataclass(default) else default
            for key, _, default, *_ in iter_fields()}


def all_keys() -> list[str]:
    keys = []
    for key, *_ in iter_fields():
        keys.append(key)
    return keys


# --------------------------------------------------------------------------------------------
# Validation: dict -> dataclasses
# --------------------------------------------------------------------------------------------

def _closest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:  # try the last path component alone (a right key in the wrong section)
        leaf = key.rsplit(".", 1)[-1]
        match = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean '{match[0]}'?" if match else ""


def _closest_field(prefix: str, name: str, hints: dict[str, Any]) -> str:
    """A misspelt key next to the one meant (``trian`` for ``train``): suggest the sibling; a
    section is suggested with a trailing dot."""
    match = difflib.get_close_matches(name, list(hints), n=1, cutoff=0.75)
    if not match:
        return ""
    dot = "." if dataclasses.is_dataclass(hints[match[0]]) else ""
    return f"; did you mean '{prefix}{match[0]}{dot}'?"


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise TmktError(f"recipe key '{key}': expected a finite number, got {value}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        b = meta.get(bound)
        if b is not None and not ok(value, b):
            raise TmktError(f"recipe key '{key}': expected a value {word} {b}, got {value!r}")


def _convert(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(key, value, a)
            except TmktError as e:
                errors.append(e)
        raise TmktError(f"recipe key '{key}': expected {describe_type(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise TmktError(f"recipe key '{key}': expected one of "
                            f"{', '.join(map(repr, allowed))}, got {value!r}"
                            + _closest_value(value, allowed))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise TmktError(f"recipe key '{key}': expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise TmktError(f"recipe key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TmktError(f"recipe key '{key}': expected an integer, got {value!r}")
        if not -2**63 <= value < 2**63:  # numpy, torch and HDF5 hold 64-bit integers
            raise TmktError(f"recipe key '{key}': {value} does not fit in a 64-bit integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TmktError(f"recipe key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TmktError(f"recipe key '{key}': expected a string, got {value!r}")
        if "\0" in value:  # no file name or path may hold one; the OS would refuse later
            raise TmktError(f"recipe key '{key}': contains a NUL byte: {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} for {key}")  # a bug in the schema


def _closest_value(value: Any, allowed: tuple) -> str:
    if not isinstance(value, str):
        return ""
    match = difflib.get_close_matches(value, [a for a in allowed if isinstance(a, str)], n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """Validate a raw mapping against dataclass ``cls``; every error names the full key."""
    where = prefix.rstrip(".") or "recipe"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TmktError(f"recipe key '{where}': expected a mapping of keys, got {raw!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if k not in fields:
            if not is_key_name(k):  # text of a file that is no recipe: named, not echoed
                at = f"recipe section '{where}'" if prefix else "the recipe"
                raise TmktError(f"{at}: a key that is not a key name ({describe_text(k)}); "
                                f"is this a tmkt recipe?")
            hint = _closest_field(prefix, str(k), hints) or _closest(key, all_keys())
            raise TmktError(f"unknown recipe key '{key}'{hint}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = build(tp, v, key + ".")
        else:
            value = _convert(key, v, tp)
            _check_range(key, value, fields[k].metadata)
            kwargs[k] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def read_yaml(path: Path, what: str = "recipe") -> dict:
    if not path.exists():
        raise TmktError(f"{what} not found: {path}")
    if path.is_dir():
        raise TmktError(f"{what} is a folder, expected a YAML file: {path}")
    try:
        data = safe_yaml.load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        # PyYAML's problem quotes at most one token (a character, a tag, an alias); a long
        # one is the file's text, which the message locates instead of echoing
        if len(problem) > 120:
            problem = problem.split("'")[0].rstrip() + " (a token too long to show)"
        raise TmktError(f"{what} {path}{at}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise TmktError(f"{what} {path}: not a text file") from None
    if data is None:
        raise TmktError(f"{what} {path} is empty")
    if not isinstance(data, dict):
        raise TmktError(f"{what} {path}: expected a mapping of keys at the top, "
                        f"got {type(data).__name__}")
    strange = _strange_key(data)
    if strange:  # another kind of file that YAML happens to read (a password database, say)
        section, key = strange
        place = f"in section '{section}'" if section else "at the top"
        raise TmktError(f"{what} {path}: not a tmkt recipe (a key {place} is not a key name "
                        f"but {describe_text(key)})")
    return data


def _strange_key(data: dict, prefix: str = "") -> tuple[str, Any] | None:
    """The first key, at any depth, that is not a key name: (its section, the key)."""
    for key, value in data.items():
        if not is_key_name(key):
            return prefix.rstrip("."), key
        found = _strange_key(value, f"{prefix}{key}.") if isinstance(value, dict) else None
        if found:
            return found
    return None


KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What a recipe key looks like; anything else is shown by its length, never echoed."""


def is_key_name(key: Any) -> bool:
    return isinstance(key, str) and KEY_NAME.fullmatch(key) is not None


def describe_text(value: Any) -> str:
    """A value from a file, described without echoing it."""
    if isinstance(value, str):
        return f"a text of {len(value)} characters"
    return f"a {type(value).__name__}"


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        raise TmktError(f"recipe {path}: 'base' chain loops back to itself")
    raw = read_yaml(path)
    base = raw.get("base")
    if base:
        if not isinstance(base, str):
            raise TmktError(f"recipe key 'base': expected a string, got {base!r}")
        base_path = path.parent / base
        if not base_path.exists():
            raise TmktError(f"recipe key 'base' in {path}: file not found: {base_path}")
        raw = deep_merge(_load_raw(base_path, (*seen, resolved)), raw)
    raw.pop("base", None)
    return raw


def load_raw_recipe(path: str | Path) -> dict:
    """A recipe file with its ``base`` chain merged, before validation."""
    return _load_raw(Path(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TmktError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise TmktError(f"--set {text!r}: the key is empty or malformed")
    try:
        parsed = safe_yaml.load(value) if value.strip() else ""
    except safe_yaml.AliasBombError as e:
        raise TmktError(f"--set {key}: the value {e.problem}") from None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                section = ".".join(parts[:i + 1])
                raise TmktError(f"--set {text!r}: '{section}' is not a section")
            node = nxt
        leaf = parts[-1]
        node[leaf] = _merged_section(text, node.get(leaf), value) if _is_section(parts) \
            else value
    return raw


def _is_section(parts: list[str]) -> bool:
    """Whether the key ``parts`` names a section of the schema (``train``,
    ``prepare.emulator``), not a value."""
    cls: Any = Recipe
    for part in parts:
        cls = _hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
    return dataclasses.is_dataclass(cls)


def _merged_section(text: str, current: Any, value: Any) -> dict:
    """``--set 'train={max_steps: 5}'``: the mapping merges into the recipe's section, key by
    key, as the same keys set one at a time would (and as ``base:`` merges a recipe). Anything
    else for a section is refused: it would reset every key of the section to its default."""
    key = text.split("=", 1)[0].strip()
    if not isinstance(value, dict):
        raise TmktError(f"--set {text!r}: '{key}' is a section; set its keys (--set "
                        f"{key}.KEY=VALUE) or merge a mapping into it (--set "
                        f"'{key}={{KEY: VALUE}}')")
    return deep_merge(current if isinstance(current, dict) else {}, value)


def default_name(path: Path | None) -> str:
    if path is None:
        return "default"
    stem = path.stem
    parent = path.resolve().parent.name
    return f"{parent}-{stem}" if parent and parent != "recipes" else stem


def load_recipe(path: str | Path | None, overrides: list[str] = (), base_raw: dict | None = None
                ) -> Recipe:
    """Load a recipe file (or only defaults with ``path=None``), apply ``--set`` overrides,
    validate, and fill derived values (name, method switches)."""
    p = Path(path) if path is not None else None
    raw = _load_raw(p) if p is not None else {}
    if base_raw:
        raw = deep_merge(base_raw, raw)
    raw_file = raw
    raw = apply_overrides(raw, list(overrides))
    recipe = build(Recipe, raw)
    if not recipe.name:
        recipe.name = default_name(p)
    if "/" in recipe.name or recipe.name in (".", ".."):
        raise TmktError(f"recipe key 'name': must be a plain folder name, got {recipe.name!r}")
    if "/" in recipe.variant or recipe.variant in (".", ".."):
        raise TmktError(f"recipe key 'variant': must be a plain folder name, got "
                        f"{recipe.variant!r}")
    check_path_lengths(recipe)
    recipe.method = resolve_method(recipe.method)
    if recipe.variant == "auto":
        recipe.variant = _auto_variant(raw_file, recipe, overrides)
    return recipe


NAME_MAX, PATH_MAX = 255, 4096
"""Linux's limits on one file name and a whole path, in bytes."""


def check_path_lengths(recipe: Recipe) -> None:
    """Names and paths the file system would refuse, refused before any folder is made."""
    for key, value in (("name", recipe.name), ("paths.runs", recipe.paths.runs),
                       ("paths.dataset", recipe.paths.dataset)):
        encoded = value.encode("utf-8", "surrogateescape")
        longest = max((len(part.encode("utf-8", "surrogateescape"))
                       for part in Path(value).parts), default=0)
        if longest > NAME_MAX:
            raise TmktError(f"recipe key '{key}': a folder name of {longest} bytes (the file "
                            f"system allows {NAME_MAX}): {value[:40]}...")
        if len(encoded) > PATH_MAX - 512:  # room for the run folders and file names below
            raise TmktError(f"recipe key '{key}': a path of {len(encoded)} bytes (at most "
                            f"{PATH_MAX - 512}): {value[:40]}...")


def _auto_variant(raw_file: dict, recipe: Recipe, overrides: list[str]) -> str:
    """The folder of a ``--set`` variant (tmkt_cli/variants.py)."""
    from tmkt_cli.variants import PLACED_BY_HAND, variant_name

    if not overrides or any(parse_override(o)[0][0] in PLACED_BY_HAND for o in overrides):
        return ""
    plain = build(Recipe, raw_file)
    plain.method = resolve_method(plain.method)
    volatile = {key for key, *_, meta in iter_fields() if meta.get("volatile")}
    return variant_name(to_dict(plain), to_dict(recipe), volatile, all_keys())


def dump_yaml(obj: Any) -> str:
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _strip_volatile(cls: type, data: dict) -> dict:
    out = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("volatile"):
            continue
        v = data[f.name]
        out[f.name] = _strip_volatile(hints[f.name], v) if dataclasses.is_dataclass(
            hints[f.name]) else v
    return out


def stage_config(recipe: Recipe, stage: str) -> dict:
    """The part of the recipe a stage reads, without volatile keys: what its hash covers."""
    full = _strip_volatile(Recipe, to_dict(recipe))
    out = {k: full[k] for k in STAGE_SECTIONS[stage]}
    for key in STAGE_IGNORED_KEYS.get(stage, ()):
        section, leaf = key.split(".")
        out[section] = {k: v for k, v in out[section].items() if k != leaf}
    return out


def config_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def require_path(path: str | Path, key: str, kind: Literal["file", "dir", "any"] = "any") -> Path:
    """A path the recipe points to must exist: the error names the path and the key."""
    p = Path(path)
    if not str(path):
        raise TmktError(f"recipe key '{key}' is empty: it must name a {kind}")
    if not p.exists():
        raise TmktError(f"{p}: not found (from recipe key '{key}')")
    if kind == "file" and not p.is_file():
        raise TmktError(f"{p}: expected a file, found a folder (from recipe key '{key}')")
    if kind == "dir" and not p.is_dir():
        raise TmktError(f"{p}: expected a folder, found a file (from recipe key '{key}')")
    return p
