"""notebook 03: Concept explanations of a classifier: ClassifSAE and four baselines behind one interface, and their evaluation.

Every method turns sentence vectors x [n, d] into m concept activations (m = 20 here) and decodes concept
activations back into a hidden vector that the classifier can be run on:

    explainer.concepts(x) -> a [n, m]          explainer.decode(a) -> hidden [n, d]

so that RAcc (decode everything) and concept ablations (zero one a_j, decode) are real interventions through the
rest of the model (`saelab.classifier.PromptedClassifier.predict_from_hidden`).

| method | concepts | decode |
|---|---|---|
| ClassifSAE (`classifsae_concepts`) | the 20 class latents z_class | z_class @ W_dec[:20] + b_dec |
| TopK SAE + L1 LR (`topk_sae_l1_concepts`) | 20 latents of a plain TopK SAE chosen by an L1 logistic regression on the train split's predicted labels | their decoder rows + b_dec |
| FastICA (`fit_ica`) | 20 independent components (scikit-learn) | mixing matrix + mean |
| ConceptSHAP (`train_conceptshap`) | cosines to 20 unit concept vectors, thresholded, normalised to sum 1 | 2-layer MLP, trained by cross-entropy through the rest of the model + coherence/diversity regularisers |
| HI-Concept (`train_hi_concept`) | same as ConceptSHAP | same, plus a reconstruction term and, in the second half, HI-Concept's flip loss under random concept masking |

`fit_methods` trains all five on one set of vectors and predicted labels (sizes in `Settings`);
`evaluate_explainer` computes the comparison metrics of `saelab.concept_metrics` for one method on the test split
(notebook 03's per-sentence protocol, with intervals and verdicts, is `saelab.classifsae_eval`);
`describe_concepts` lists each concept's top sentences and TF-IDF top words so a person can judge it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from saelab import concept_metrics
from saelab.checks import check_latents
from saelab.classifier import PromptedClassifier
from saelab.classifsae import ClassifSAE, ClassifSAEConfig, anchor_train_config, train_centered, train_classifsae
from saelab.sae import SAE, SAEConfig
from saelab.train import TrainConfig, adam, train_sae, trains


class ConceptExplainer:
    """The common interface: `concepts(x)` -> [n, m] and `decode(a)` -> [n, d] (both without gradient)."""

    name: str = "concepts"
    d_in: int
    n_concepts: int

    def check(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"{self.name} reads vectors of width d_in={self.d_in}; got shape {tuple(x.shape)} "
                             "(vectors from another model or hook?)")
        return x.float()

    def concepts(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, a: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(concepts(x)): the hidden vector rebuilt from the m concepts only."""
        return self.decode(self.concepts(x))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.n_concepts} concepts, d_in={self.d_in})"


# ------------------------------------------------------------------------------------------------------------------
# SAE-based: ClassifSAE and a plain TopK SAE with latents picked by L1 logistic regression
# ------------------------------------------------------------------------------------------------------------------


class SAEConcepts(ConceptExplainer):
    """A chosen set of an SAE's latents as the concepts; decoding uses only those latents (and b_dec)."""

    def __init__(self, sae: SAE, latents: Sequence[int], name: str):
        self.sae, self.name = sae.eval(), name
        self.latents = torch.as_tensor(list(latents), dtype=torch.long)
        self.d_in, self.n_concepts = sae.cfg.d_in, len(self.latents)
        if len(set(self.latents.tolist())) != self.n_concepts:
            raise ValueError("the chosen latents must be distinct")
        check_latents(sae, self.latents)

    @torch.no_grad()
    def concepts(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(self.check(x))[:, self.latents]

    @torch.no_grad()
    def decode(self, a: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(a).float() @ self.sae.W_dec[self.latents] + self.sae.b_dec


def classifsae_concepts(model: ClassifSAE, classifier: PromptedClassifier | None = None) -> SAEConcepts:
    """ClassifSAE's z_class as concepts; with `classifier`, checks that the head was trained for its classes."""
    if classifier is not None:
        if model.cfg.n_classes != classifier.n_classes:
            raise ValueError(f"the ClassifSAE head predicts {model.cfg.n_classes} classes but the classifier has "
                             f"{classifier.n_classes} ({classifier.label_names}): the label set does not match")
        if model.d_in != classifier.d_model:
            raise ValueError(f"the ClassifSAE has d_in={model.d_in} but the classifier's vectors have width "
                             f"{classifier.d_model}")
    return SAEConcepts(model.sae, range(model.cfg.n_concepts), "ClassifSAE")


def pick_latents_l1(codes: torch.Tensor, labels: np.ndarray, n_concepts: int = 20, *, seed: int = 0,
                    Cs: Sequence[float] = tuple(np.logspace(-3, 1, 9))) -> list[int]:
    """Latents chosen by L1-penalised logistic regression (scikit-learn, saga) of labels on the codes.

    The codes are scaled to unit variance; C grows along `Cs` until at least `n_concepts` latents have a non-zero
    coefficient, and the `n_concepts` with the largest |coefficient| (over classes) are returned. Fit this on the
    train split (the paper fits it on test data, which leaks the test labels into the choice).
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MaxAbsScaler

    codes = np.asarray(torch.as_tensor(codes).double())
    labels = np.asarray(labels)
    alive = np.flatnonzero((codes != 0).any(0))
    if len(alive) < n_concepts:
        raise ValueError(f"only {len(alive)} latents fire on the training vectors; cannot choose {n_concepts}")
    std = codes[:, alive].std(0)
    X = sparse.csr_matrix(codes[:, alive] / np.where(std > 0, std, 1.0))
    X = MaxAbsScaler().fit_transform(X)  # keeps sparsity; bounded features help saga converge
    weight = np.zeros(len(alive))
    for C in Cs:
        lr = LogisticRegression(C=C, l1_ratio=1.0, solver="saga", max_iter=300, tol=1e-3, random_state=seed)
        with _quiet_convergence():
            lr.fit(X, labels)
        weight = np.abs(lr.coef_).max(0)
        if (weight > 0).sum() >= n_concepts:
            break
    frequency = (codes[:, alive] != 0).mean(0)  # breaks ties among zero weights
    order = np.lexsort((-frequency, -weight))
    return alive[order[:n_concepts]].tolist()


class _quiet_convergence:
    def __enter__(self):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", ConvergenceWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def topk_sae_l1_concepts(x_train: torch.Tensor, predicted_labels: np.ndarray, n_concepts: int = 20, *, k: int = 10,
                         expansion: int = 2, train_cfg: TrainConfig | None = None, n_steps: int = 1000,
                         normalize_activations: str = "centered", seed: int = 0,
                         hook_name: str | None = None, progress: bool = True) -> SAEConcepts:
    """Train a plain TopK SAE (k, d_sae = expansion * d_in, inputs scaled as ClassifSAE's: "centered" by default,
    see `saelab.classifsae`) on the train vectors with saelab's trainer, then keep the `n_concepts` latents an L1
    logistic regression finds most predictive of the classifier's labels."""
    x_train = torch.as_tensor(x_train).float()
    centered = normalize_activations == "centered"
    cfg = SAEConfig(d_in=x_train.shape[1], d_sae=expansion * x_train.shape[1], architecture="topk", k=k,
                    hook_name=hook_name, normalize_activations="none" if centered else normalize_activations)
    tcfg = train_cfg or TrainConfig(n_steps=n_steps, batch_size=256, seed=seed, b_dec_init="mean")
    sae = (train_centered(x_train, cfg, tcfg, progress=progress) if centered
           else train_sae(x_train, cfg, tcfg, progress=progress))
    with torch.no_grad():
        codes = sae.encode(x_train)
    return SAEConcepts(sae, pick_latents_l1(codes, predicted_labels, n_concepts, seed=seed), "TopK SAE + L1 LR")


# ------------------------------------------------------------------------------------------------------------------
# FastICA
# ------------------------------------------------------------------------------------------------------------------


class ICAConcepts(ConceptExplainer):
    """FastICA components as concepts (signed: a concept "fires" when |a| > eps, i.e. almost always)."""

    name = "FastICA"

    def __init__(self, ica):
        self.ica = ica
        self.n_concepts, self.d_in = ica.components_.shape
        self.mixing = torch.as_tensor(ica.mixing_, dtype=torch.float64)  # [d, m]
        self.mean = torch.as_tensor(ica.mean_, dtype=torch.float64)

    @torch.no_grad()
    def concepts(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.ica.transform(self.check(x).double().numpy())).float()

    @torch.no_grad()
    def decode(self, a: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(a).double() @ self.mixing.T + self.mean).float()


def fit_ica(x_train: torch.Tensor, n_concepts: int = 20, *, seed: int = 0, max_iter: int = 1000) -> ICAConcepts:
    """FastICA with `n_concepts` components on the train vectors (scikit-learn, unit-variance whitening)."""
    from sklearn.decomposition import FastICA

    x = np.asarray(torch.as_tensor(x_train).double())
    if len(x) <= n_concepts:
        raise ValueError(f"FastICA with {n_concepts} components needs more than {n_concepts} vectors, got {len(x)}")
    with _quiet_convergence():
        ica = FastICA(n_components=n_concepts, whiten="unit-variance", random_state=seed, max_iter=max_iter).fit(x)
    return ICAConcepts(ica)


# ------------------------------------------------------------------------------------------------------------------
# ConceptSHAP and HI-Concept
# ------------------------------------------------------------------------------------------------------------------


class ConceptNet(nn.Module):
    """Unit concept vectors, thresholded cosine scores normalised to sum 1, and a 2-layer MLP back to the hidden.

    scores:  cos_j = cos(x - mean, c_j); kept where softmax_j(cos) > 1/m (HI-Concept's rule; or, with
             `threshold`, where cos_j > threshold as in ConceptSHAP); a = relu(cos) * kept / (sum + 1e-3)
    decode:  g(a) = W_2 relu(W_1 a + b_1) + b_2, with b_2 starting at the data mean
    """

    def __init__(self, d_in: int, n_concepts: int, hidden_dim: int, mean: torch.Tensor,
                 threshold: float | None = None, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.concept = nn.Parameter(torch.rand(d_in, n_concepts, generator=generator) - 0.5)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.hidden = nn.Linear(n_concepts, hidden_dim)
        self.out = nn.Linear(hidden_dim, d_in)
        with torch.no_grad():
            for layer in (self.hidden, self.out):
                bound = 1 / layer.in_features ** 0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            self.out.bias.add_(self.mean)
        self.threshold = threshold
        self.n_concepts = n_concepts

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x - self.mean, dim=-1) @ F.normalize(self.concept, dim=0)

    def scores(self, cosines: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if self.threshold is None:
            kept = cosines.softmax(-1) > 1.0 / self.n_concepts
        else:
            kept = cosines > self.threshold
        a = cosines.clamp_min(0) * kept
        if keep is not None:
            a = a * keep
        return a / (a.sum(-1, keepdim=True) + 1e-3)

    def decode(self, a: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(a)))


class ConceptNetExplainer(ConceptExplainer):
    """A trained ConceptNet (ConceptSHAP or HI-Concept) behind the common interface."""

    def __init__(self, net: ConceptNet, name: str, history: list[dict[str, float]] | None = None):
        self.net, self.name = net.eval(), name
        self.d_in, self.n_concepts = net.concept.shape
        self.training_log = history or []

    @torch.no_grad()
    def concepts(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.scores(self.net.cosines(self.check(x)))

    @torch.no_grad()
    def decode(self, a: torch.Tensor) -> torch.Tensor:
        return self.net.decode(torch.as_tensor(a).float())


def _coherence(cosines: torch.Tensor) -> torch.Tensor:
    """ConceptSHAP's first regulariser: each concept should be close to its nearest sentences (top quarter)."""
    k = max(1, len(cosines) // 4)
    return -cosines.topk(k, dim=0).values.mean()


def _diversity(concept: torch.Tensor) -> torch.Tensor:
    """ConceptSHAP's second regulariser: mean cosine between distinct concept vectors (lower = more diverse)."""
    c = F.normalize(concept, dim=0)
    m = c.shape[1]
    return ((c.T @ c).sum() - m) / (m * (m - 1))


@trains
def train_concept_net(classifier: PromptedClassifier, x_train: torch.Tensor, predicted_labels: np.ndarray, *,
                      name: str, n_concepts: int = 20, hidden_dim: int = 256, threshold: float | None = None,
                      coherence_weight: float = 0.1, diversity_weight: float = 0.1, ae_weight: float = 0.0,
                      flip_weight: float = 0.0, mask_prob: float = 0.2, n_epochs: int = 30,
                      batch_size: int = 128, lr: float = 1e-3, seed: int = 0, progress: bool = True
                      ) -> ConceptNetExplainer:
    """Train a ConceptNet through the classifier: cross-entropy of the classifier's prediction from the decoded
    (norm-rescaled) vector against its predicted labels, plus the regularisers; with `flip_weight`, HI-Concept's
    flip loss (make randomly masked concept sets change the class distribution) in the second half of training.
    """
    x = torch.as_tensor(x_train).float()
    y = torch.as_tensor(np.asarray(predicted_labels), dtype=torch.long)
    if x.ndim != 2 or x.shape[1] != classifier.d_model:
        raise ValueError(f"the vectors must be [n, {classifier.d_model}] for this classifier, got {tuple(x.shape)}")
    if len(y) != len(x):
        raise ValueError(f"{len(y)} predicted labels for {len(x)} vectors")
    if y.min() < 0 or y.max() >= classifier.n_classes:
        raise ValueError(f"the predicted labels hold {sorted(set(y.tolist()))}, which do not match the classifier's "
                         f"{classifier.n_classes} classes")
    net = ConceptNet(x.shape[1], n_concepts, hidden_dim, x.mean(0), threshold, seed)
    optimizer = adam(list(net.parameters()), lr)
    generator = torch.Generator().manual_seed(seed)
    scale = (x - x.mean(0)).pow(2).sum(-1).mean()
    history = []
    bar = tqdm(range(n_epochs), desc=name, disable=not progress)
    with classifier.frozen_model():  # gradients reach the concept net only, never the language model
        for epoch in bar:
            causal = flip_weight > 0 and epoch >= n_epochs // 2
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                xb, yb = x[idx], y[idx]
                cos = net.cosines(xb)
                a = net.scores(cos)
                hidden = net.decode(a)
                logits = classifier.logits_from_hidden(concept_metrics.rescale_to_norm(hidden, xb))
                terms = {"ce": F.cross_entropy(logits, yb),
                         "coherence": coherence_weight * _coherence(cos),
                         "diversity": diversity_weight * _diversity(net.concept)}
                if ae_weight:
                    terms["ae"] = ae_weight * (hidden - xb).pow(2).sum(-1).mean() / scale
                if causal:
                    keep = (torch.rand(a.shape, generator=generator) > mask_prob).float()
                    masked = net.decode(net.scores(cos, keep))
                    p_masked = classifier.logits_from_hidden(concept_metrics.rescale_to_norm(masked, xb)).softmax(-1)
                    terms["flip"] = -flip_weight * (logits.softmax(-1) - p_masked).abs().sum(-1).mean()
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            history.append({"epoch": epoch + 1, **{k: float(v.detach()) for k, v in terms.items()}})
            bar.set_postfix(ce=f"{history[-1]['ce']:.3f}")
    return ConceptNetExplainer(net, name, history)


def train_conceptshap(classifier: PromptedClassifier, x_train: torch.Tensor, predicted_labels: np.ndarray,
                      **kwargs: Any) -> ConceptNetExplainer:
    """ConceptSHAP concept discovery (Yeh et al. 2020): cross-entropy through the model + coherence + diversity."""
    return train_concept_net(classifier, x_train, predicted_labels, name="ConceptSHAP", **kwargs)


def train_hi_concept(classifier: PromptedClassifier, x_train: torch.Tensor, predicted_labels: np.ndarray,
                     *, flip_weight: float = 1.0, ae_weight: float = 0.1, **kwargs: Any) -> ConceptNetExplainer:
    """HI-Concept: ConceptSHAP's objective plus a reconstruction term and the flip loss (second half)."""
    return train_concept_net(classifier, x_train, predicted_labels, name="HI-Concept", flip_weight=flip_weight,
                             ae_weight=ae_weight, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Evaluation and description
# ------------------------------------------------------------------------------------------------------------------


def evaluate_explainer(explainer: ConceptExplainer, classifier: PromptedClassifier, x_test: torch.Tensor,
                       embeddings: np.ndarray, *, ks: Sequence[int] = (1, 2, 3, 4), progress: bool = False
                       ) -> dict[str, Any]:
    """The comparison metrics of one method on the test split (see `saelab.concept_metrics`): RAcc, activation
    rate, Delta f_cond, TVD_cond, ConceptSim and SentenceSim(k), plus the concept activations for later use."""
    x = explainer.check(x_test)
    if x.shape[1] != classifier.d_model:
        raise ValueError(f"the vectors have width {x.shape[1]} but the classifier reads {classifier.d_model}")
    if len(embeddings) != len(x):
        raise ValueError(f"{len(embeddings)} sentence embeddings for {len(x)} vectors")
    a = explainer.concepts(x)
    causal = concept_metrics.conditional_causality(classifier.proba_from_hidden, explainer.decode, a, x,
                                                   progress=progress)
    sim = concept_metrics.concept_sim(a, embeddings)
    sentence = concept_metrics.sentence_sim(a, embeddings, ks=ks)
    row = {
        "method": explainer.name,
        "racc": concept_metrics.recovery_accuracy(classifier.predict_from_hidden, x, explainer.decode(a)),
        "activation_rate": concept_metrics.activation_rate(a, alive_only=True),  # dead concepts dropped (paper)
        "delta_f_cond": causal["delta_f_cond"],
        "tvd_cond": causal["tvd_cond"],
        "n_firing_concepts": causal["n_firing_concepts"],
        "concept_sim": sim["concept_sim"],
        **{f"sentence_sim_{k}": sentence[k]["mean_cosine"] for k in ks},
    }
    return {"row": row, "concepts": a, "causality": causal, "concept_sim": sim, "sentence_sim": sentence}


def describe_concepts(concepts: torch.Tensor, texts: Sequence[str], *, n_sentences: int = 5, n_words: int = 8,
                      stop_words: str | None = "english") -> list[dict[str, Any]]:
    """For each concept: how often it fires, its top sentences, and the TF-IDF top words of its upper Jenks group.

    TF-IDF (scikit-learn's TfidfVectorizer) is fit on all `texts`; a concept's words are the largest entries of the
    mean TF-IDF vector of the sentences in its upper group (the same group ConceptSim uses).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    a = np.asarray(torch.as_tensor(concepts).double())
    if len(a) != len(texts):
        raise ValueError(f"{len(a)} rows of concepts for {len(texts)} texts")
    def fit(min_df: int):
        vectorizer = TfidfVectorizer(stop_words=stop_words, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z']+\b",
                                     min_df=min_df)
        return vectorizer, vectorizer.fit_transform(texts)

    try:  # words seen in one sentence only say little about a group; keep them only for tiny inputs
        vectorizer, tfidf = fit(2)
    except ValueError:
        vectorizer, tfidf = fit(1)
    vocabulary = np.asarray(vectorizer.get_feature_names_out())
    out = []
    for j in range(a.shape[1]):
        strength = np.abs(a[:, j])
        upper = concept_metrics.jenks_upper_group(a[:, j])
        top = np.argsort(-strength, kind="stable")[:n_sentences]
        words = []
        if upper.any():
            weights = np.asarray(tfidf[upper].mean(0)).ravel()
            words = [vocabulary[i] for i in np.argsort(-weights)[:n_words] if weights[i] > 0]
        out.append({"concept": j, "firing_rate": float((strength > 1e-6).mean()), "n_upper": int(upper.sum()),
                    "top_sentences": [(texts[i], float(a[i, j])) for i in top if strength[i] > 1e-6],
                    "tfidf_words": words})
    return out


@dataclass
class Settings:
    """The sizes every method is trained with (notebook 03's settings cell)."""

    n_concepts: int = 20
    sae_steps: int = 1500
    sae_batch: int = 128
    sae_lr: float = 1e-3
    net_epochs: int = 30

    def sae_train_config(self, seed: int) -> TrainConfig:
        """The plain TopK SAE's schedule: ClassifSAE's (cosine to lr/100, no warm-up)."""
        return TrainConfig(n_steps=self.sae_steps, batch_size=self.sae_batch, lr=self.sae_lr, seed=seed,
                           b_dec_init="mean", decay="cosine", decay_fraction=1.0, min_lr=self.sae_lr / 100,
                           warmup_steps=0)


def fit_methods(x: torch.Tensor, y: np.ndarray, classifier, seed: int, settings: Settings,
                timings: dict[str, list[float]] | None = None) -> tuple[Any, dict[str, Any]]:
    """ClassifSAE and the four baselines on training vectors x and predicted labels y: (ClassifSAE, explainers)."""
    s, timings = settings, timings if timings is not None else {}

    def timed(name, fit):
        started = time.perf_counter()
        out = fit()
        timings.setdefault(name, []).append(time.perf_counter() - started)
        return out

    cfg = ClassifSAEConfig(n_classes=classifier.n_classes, n_concepts=s.n_concepts)
    tcfg = anchor_train_config(s.sae_steps, batch_size=s.sae_batch, lr=s.sae_lr, min_lr=s.sae_lr / 100, seed=seed)
    csae = timed("ClassifSAE", lambda: train_classifsae(x, y, cfg, tcfg, progress=False,
                                                         hook_name=classifier.hook_name))
    nets = {"n_concepts": s.n_concepts, "n_epochs": s.net_epochs, "seed": seed, "progress": False}
    explainers = {
        "ClassifSAE": classifsae_concepts(csae, classifier),
        "TopK SAE + L1 LR": timed("TopK SAE + L1 LR", lambda: topk_sae_l1_concepts(
            x, y, s.n_concepts, train_cfg=s.sae_train_config(seed), seed=seed, hook_name=classifier.hook_name,
            progress=False)),
        "FastICA": timed("FastICA", lambda: fit_ica(x, s.n_concepts, seed=seed)),
        "ConceptSHAP": timed("ConceptSHAP", lambda: train_conceptshap(classifier, x, y, **nets)),
        "HI-Concept": timed("HI-Concept", lambda: train_hi_concept(classifier, x, y, **nets)),
    }
    return csae, explainers



__all__ = [
    "ConceptExplainer", "ConceptNet", "ConceptNetExplainer", "ICAConcepts", "SAEConcepts", "Settings",
    "classifsae_concepts", "fit_methods",
    "describe_concepts", "evaluate_explainer", "fit_ica", "pick_latents_l1", "topk_sae_l1_concepts",
    "train_concept_net", "train_conceptshap", "train_hi_concept",
]
