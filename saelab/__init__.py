"""saelab: a Jupyter-first workbook for sparse autoencoders on language-model activations.

The library is thin on purpose: notebooks call these helpers in one or two lines and keep the ideas visible.
"""

from saelab._version import __version__
from saelab.activations import Activations, extract, hook_names, last_occurrence, load_activations
from saelab.config import cache_dir, smoke_mode
from saelab.classifier import PromptedClassifier, build_classifier
from saelab.classifsae import ClassifSAE, ClassifSAEConfig, train_classifsae
from saelab import classifier, classifsae, concepts, metrics, polysemy, probing, steering, viz, widgets, zoo
from saelab.models import ModelNotAvailableError, load_model, tiny_model
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
from saelab.viz import latent_dashboard, latent_records, logit_lens
from saelab.zoo import SAESpec, get_sae, get_saes

__all__ = [
    "__version__", "Activations", "extract", "hook_names", "last_occurrence", "load_activations",
    "cache_dir", "smoke_mode", "ModelNotAvailableError", "load_model", "tiny_model",
    "ClassificationTask", "LabelledTexts", "TaskNotAvailableError", "WiCPair", "WiCTask", "available_tasks",
    "load_task", "metrics", "SAE", "SAEConfig", "TrainConfig", "train_sae", "viz", "widgets", "zoo", "polysemy", "probing", "steering",
    "classifier", "classifsae", "concepts", "PromptedClassifier", "build_classifier", "ClassifSAE", "ClassifSAEConfig",
    "train_classifsae",
    "latent_dashboard", "latent_records", "logit_lens", "SAESpec", "get_sae", "get_saes",
]
