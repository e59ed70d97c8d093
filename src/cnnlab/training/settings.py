"""The training stage's config sections (`train:`, `optimizer:`, `schedule:`) and `TrainingRecipe`, the
typed view of a config that training reads; config.py composes these sections into the experiment."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Protocol, Union

from pydantic import Field, field_validator, model_serializer, model_validator

from cnnlab.errors import TUPLE_FROM_LIST, StrictModel

# Upper bounds of what a user may ask for: far above any real recipe, low enough that no count overflows
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20
MAX_SEED = 2**32 - 1  # what NumPy's legacy seeding accepts
MAX_THREADS = 1024  # a fixed bound, so a config valid on one machine is valid on all
MAX_SEEDS = 100  # train.seeds: runs of one multi-seed experiment


class EarlyStopping(StrictModel):
    """`train.early_stopping`: stop when the monitored validation metric stops improving."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=5, ge=1, le=MAX_EPOCHS)
    min_delta: float = Field(default=0.0, ge=0)
    restore_best: bool = True


class TrainSection(StrictModel):
    """`train:` epochs, batches, validation split, seed, device and the compute plan's overrides."""

    epochs: int = Field(default=10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH_SIZE)
    validation_split: float = Field(default=0.1, ge=0, lt=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="0 to 2**32 - 1")
    early_stopping: Optional[EarlyStopping] = None
    device: str = Field(default="auto", max_length=64)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    eval_batch_size: int = Field(default=1024, ge=1, le=MAX_BATCH_SIZE)
    threads: Optional[int] = Field(default=None, ge=1, le=MAX_THREADS, description="CPU threads (default: all cores)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on GPUs and on CPUs with bfloat16 matrix instructions (AMX or "
                                    "AVX512-BF16) for convolutional models, fp32 elsewhere; fp16 needs CUDA")
    channels_last: Union[Literal["auto"], bool] = Field(default="auto", description="NHWC memory layout")
    compile: bool = Field(default=False, description="torch.compile the model (one-time cost reported apart)")
    validate_every: int = Field(default=1, ge=1, le=MAX_EPOCHS,
                                description="epochs between validation passes (and the last one)")
    ema_decay: Optional[float] = Field(default=None, gt=0, lt=1, description="per-step decay of an exponential "
                                       "moving average of the weights; the average is what gets evaluated and saved")
    checkpoint_every_s: float = Field(default=300.0, ge=0, le=7 * 24 * 3600, description="seconds between "
                                      "checkpoints inside an epoch (one is written after every epoch too)")
    seeds: Optional[list[Annotated[int, Field(ge=0, le=MAX_SEED)]]] = Field(
        default=None, min_length=1, max_length=MAX_SEEDS, description="train once per seed into one folder with "
        "the aggregate (studies/seeds.py); each seed's run uses it as its train.seed")
    tensorboard: bool = Field(default=False, description="write TensorBoard event files into RUN_DIR/tensorboard/ "
                              "while training: curves, confusion matrix, hyperparameters (needs cnnlab[tensorboard])")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: Optional[list[int]]) -> Optional[list[int]]:
        if seeds is not None and len(set(seeds)) < len(seeds):
            repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
            raise ValueError(f"each seed may appear once, but {', '.join(map(str, repeated))} is repeated")
        return seeds

    @model_serializer(mode="wrap")
    def _without_unset_seeds(self, handler: Any) -> dict[str, Any]:
        # a single-seed run's config.yaml stays as it was before train.seeds (and train.tensorboard) existed
        # (resumes, suite skips)
        data = handler(self)
        if data.get("seeds", ()) is None:
            del data["seeds"]
        if data.get("tensorboard", True) is False:
            del data["tensorboard"]
        return data

    @model_validator(mode="after")
    def _early_stopping_needs_validation(self) -> "TrainSection":
        if self.early_stopping is not None and self.validation_split == 0:
            raise ValueError("early stopping watches the validation set, but validation_split is 0: "
                             "set train.validation_split (e.g. 0.1) or train.early_stopping=null")
        return self


class OptimizerSection(StrictModel):
    """`optimizer:` the optimiser, its base learning rate, decay and the Keras-style L2 penalty."""

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled (AdamW) or coupled (SGD/Adam) decay")
    l2: float = Field(default=0.0, ge=0, description="Keras-style L2 penalty on kernels, added to the loss")
    l2_layers: Literal["all", "conv", "dense"] = Field(default="all", description="which kernels the L2 penalty covers")
    betas: Annotated[tuple[float, float], TUPLE_FROM_LIST] = (0.9, 0.999)
    rho: float = Field(default=0.9, gt=0, lt=1,
                       description="RMSprop's squared-gradient average (Keras' rho, 0.9; PyTorch calls it alpha)")

    @field_validator("name", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ScheduleSection(StrictModel):
    """`schedule:` the learning rate as a function of training progress (see `lr_factor_function`)."""

    name: Literal["constant", "step", "piecewise", "cosine", "onecycle"] = "constant"
    step_size: int = Field(default=10, ge=1, le=MAX_EPOCHS, description="step: epochs between decays")
    gamma: float = Field(default=0.1, gt=0, description="step: decay factor")
    boundaries: list[int] = Field(default_factory=list, description="piecewise: first 0-based epoch of each new lr "
                                                                    "(Keras `if epoch > 50` is boundary 51)")
    values: list[float] = Field(default_factory=list, description="piecewise: lr before, between and after boundaries")
    warmup_epochs: float = Field(default=0.0, ge=0, le=MAX_EPOCHS)
    min_lr: float = Field(default=0.0, ge=0)
    max_lr: Optional[float] = Field(default=None, gt=0, description="onecycle peak (default: optimizer.lr)")

    @model_validator(mode="after")
    def _piecewise(self) -> "ScheduleSection":
        if self.name == "piecewise":
            if len(self.values) != len(self.boundaries) + 1:
                raise ValueError("piecewise needs one more value than boundaries (lr before, between and after them)")
            if list(self.boundaries) != sorted(self.boundaries):
                raise ValueError("piecewise boundaries must increase")
        return self


class TrainingRecipe(Protocol):
    """What training reads from an experiment's config (the experiment config is one)."""

    @property
    def train(self) -> TrainSection: ...

    @property
    def optimizer(self) -> OptimizerSection: ...

    @property
    def schedule(self) -> ScheduleSection: ...
