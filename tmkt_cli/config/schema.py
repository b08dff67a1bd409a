"""The recipe schema: one typed dataclass per recipe section.

The dataclasses below are the single source of every recipe key's type, default, allowed range
and help text (the docstring under each attribute). ``docs/recipes.md`` is generated from them
(``tmkt recipe-doc``, config/recipe_doc.py) and the loader (config/loading.py) refuses anything
they do not describe.

A recipe is one YAML file with shared keys (``name``, ``seed``, ``paths``) and one section per
stage. Sections a stage does not read are ignored by that stage and by its config hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tmkt_cli.methods.registry import method_names


def param(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None,
          volatile: bool = False, factory=None, choices=None, hash_at_default: bool = True):
    """A recipe field with an allowed range.

    ``volatile`` marks keys that change how a run executes but not what it computes (worker
    counts, logging cadence, the device): they are left out of the config hash, so changing
    them never invalidates a finished or resumable run. ``choices``, a function returning the
    allowed values, is for a set that grows at run time (the registered methods).
    ``hash_at_default=False`` is for a key added after runs were made whose default is what
    those runs computed: left out of the config hash while at its default, so they stay up to
    date under the new version.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "volatile": volatile, "choices": choices,
            "hash_at_default": hash_at_default}
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
    pairing: Literal["class", "instance", "position_as_index"] = "class"
    """Static partner of an event sample: a random training image of the same class, redrawn
    every time (``class``), or the recording's own image where the dataset has one
    (``instance``). ``position_as_index`` reproduces KT's CEP-DVS indexing bug: a random
    position among the class's rows of the training images (ordered by dataset index) is read
    as a dataset index, so with CEP-DVS's classes in blocks of 500 class i draws images of
    class i // 2 (docs/methods.md, "Reference fidelity")."""
    pairing_one_past: bool = param(False, hash_at_default=False)
    """With ``pairing: class``, draw from the class's training images and its first held-out
    (test) image too: KT's N-Caltech101 code bounds its draw one past the class's training
    images. false: training images only."""
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
    rotation_interpolation: Literal["bilinear", "nearest"] = param("bilinear",
                                                                   hash_at_default=False)
    """How the random rotation resamples what it turns: ``bilinear``, or ``nearest``
    neighbour (KT's CEP-DVS code: torchvision's RandomRotation default); zeros come in from
    outside either way."""
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
    conv_init: Literal["kaiming_fan_out", "torch_default"] = param("kaiming_fan_out",
                                                                   hash_at_default=False)
    """Initialisation of the trunk's convolutions: He-normal with fan-out
    (``kaiming_fan_out``: TET's VGG-SNN, KT's ResNet-18) or PyTorch's default, uniform in
    +-1/sqrt(fan_in) (``torch_default``: KT's VGG-SNN sets none). BN starts at unit scale and
    linear layers at PyTorch's default either way; ``scnn_kt`` has KT's SCNN initialisation
    and takes only the default. docs/methods.md, "Reference fidelity"."""
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
    """Drop each epoch's last partial batch (KT's training loaders, ``drop_last=True``, but for
    CIFAR10-DVS); a split smaller than one batch is still one batch. false: train on the partial batch too (one of a
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
    (see docs/methods.md); the resolved values are printed by --show-recipe and saved."""

    name: str = param("tmkt", choices=method_names)
    """event_only (TET on events), finetune (static then events), kt, tmkt; static_only: the
    SNN on the static training images alone (repeated over T, static head), tested on the
    static test images: what the images can teach this network (the headroom measure).
    static_only needs ``model.test_head: static``. Each is declared once in
    tmkt_cli/methods/builtin.py (its inputs, default switches and step)."""
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
                     "data.pairing", "data.pairing_one_past"),
    # where the teacher lives is not configuration: its identity is the input hash
    "distill": ("distill.teacher",),
}
