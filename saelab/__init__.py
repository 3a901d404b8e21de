"""saelab: a Jupyter-first workbook for sparse autoencoders on language-model activations.

The library is thin on purpose: notebooks call these helpers in one or two lines and keep the ideas visible. The
names below are the curated API (what the README and the notebooks use); each method lives in its own module
(`saelab.probing` for notebook 04, `saelab.polysemy` for 05, `saelab.steering` for 06, ...), and
`saelab.models.tiny_model` builds the small random model the unit tests use.
"""

from saelab._version import __version__
from saelab.activation_cache import ShardedTokens
from saelab.activations import Activations, extract, hook_names, last_occurrence, load_activations
from saelab.classifier import PromptedClassifier, build_classifier
from saelab.classifsae import ClassifSAE, ClassifSAEConfig, train_classifsae
from saelab.config import cache_dir, set_smoke, smoke_mode
from saelab.latents import LatentRecords, latent_records, logit_lens
from saelab.metrics import core_metrics, reconstruction_metrics
from saelab.models import ModelNotAvailableError, load_model
from saelab.pretrained import load_pretrained_sae
from saelab.report import record_findings
from saelab.sae import SAE, SAEConfig
from saelab.tasks import (
    ClassificationTask,
    LabelledTexts,
    TaskNotAvailableError,
    WiCPair,
    WiCTask,
    available_tasks,
    load_task,
)
from saelab.train import TrainConfig, train_sae
from saelab.viz import latent_dashboard
from saelab.zoo import SAESpec, get_sae, get_saes

__all__ = [
    "Activations",
    "ClassifSAE",
    "ClassifSAEConfig",
    "ClassificationTask",
    "LabelledTexts",
    "LatentRecords",
    "ModelNotAvailableError",
    "PromptedClassifier",
    "SAE",
    "SAEConfig",
    "SAESpec",
    "ShardedTokens",
    "TaskNotAvailableError",
    "TrainConfig",
    "WiCPair",
    "WiCTask",
    "__version__",
    "available_tasks",
    "build_classifier",
    "cache_dir",
    "core_metrics",
    "extract",
    "get_sae",
    "get_saes",
    "hook_names",
    "last_occurrence",
    "latent_dashboard",
    "latent_records",
    "load_activations",
    "load_model",
    "load_pretrained_sae",
    "load_task",
    "logit_lens",
    "reconstruction_metrics",
    "record_findings",
    "set_smoke",
    "smoke_mode",
    "train_classifsae",
    "train_sae",
]
