"""notebook 04: MOSAIC-style probing: SAE codes pooled into one feature vector per text, binarized, fed to classifiers.

The recipe of MOSAIC (arXiv 2502.11367), step by step:

    tokens  = saelab.extract(model, texts, hook, pooling="none")     # residual stream, every real token
    feats   = sae_features(sae, tokens, poolings=["topn", "mean"])   # {pooling: [n_texts, d_sae] sparse}
    X       = binarize(feats["topn"], 1.0)                           # "did latent j win a top-n slot > once?"
    result  = fit_probe(X_train, y_train, X_test, y_test)            # macro-F1 with a bootstrap interval

Poolings of per-token SAE codes z [tokens, d_sae] over a text:

    topn  the paper's: each token votes for its `top_n` largest active latents (one-hot), votes summed over tokens
    mean / max / sum / last   the usual reductions over tokens (last = the text's last counted token)

Real tokens only, by default. The paper pools every position of its padded batch, BOS and padding included: the
faithful mode does the same (`saelab.probing_padded.padded_tokens` runs the padded batches and keeps every
position, with what kind of position each row is), so the difference can be measured rather than argued. A text's
padding depends on its batch-mates, so faithful features change with batch size and order, one reason the fixed
mode is the default.

Classifiers are scikit-learn's: a class-weighted logistic regression whose C is chosen by stratified k-fold
cross-validation on macro-F1 (`LogisticRegressionCV`), and a class-weighted decision tree whose depth and leaf size
are chosen the same way (`GridSearchCV`); each fit records its cross-validated macro-F1 on the training texts
(`cv_f1`), by which `saelab.probing_eval.best_per_source` picks variants. Baselines: hidden-state
probes (mean- or last-token-pooled activations, `Activations.pool`) and TF-IDF 1-2 grams (`tfidf_features`).
`zero_shot` (in `saelab.probing_zeroshot`, re-exported here) scores label words at a prompt's next token, for the
behaviour-prediction experiment. Macro-F1 and `ProbeResult` live in `saelab.probing_scores`; threshold sweeps and
the notebook's sweep and plot helpers in `saelab.probing_eval`; the claims' verdicts in `saelab.probing_claims`.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from saelab.activations import Activations, pool_segments
from saelab.checks import check_texts
from saelab.probing_padded import REAL, PaddedTokens
from saelab.probing_scores import ProbeResult, macro_f1
from saelab.probing_zeroshot import ZeroShot, label_logits, label_token_ids, zero_shot  # re-exported

POOLINGS = ("topn", "mean", "max", "sum", "last")
CLASSIFIERS = ("logreg", "tree")
DEFAULT_CS = (0.01, 0.1, 1.0)  # the C grid searched by cross-validation (inverse L2 strength)
#: processes that fit a probe's cross-validation folds side by side (scikit-learn's `n_jobs`): the folds are
#: independent and each fit is single-threaded, so they use every core; the result is the same as one by one
PROBE_JOBS = os.cpu_count() or 1
TREE_DEPTHS = (3, 5, 7, 9, None)  # the tree depths searched by cross-validation (the paper's grid, plus unpruned)
TREE_MIN_LEAF = (1, 4)  # and the least samples per leaf


# ------------------------------------------------------------------------------------------------------------------
# Pooling SAE codes
# ------------------------------------------------------------------------------------------------------------------


def _check_top_n(top_n: Any, d_sae: int) -> int:
    if isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral):
        raise TypeError(f"top_n must be an integer between 1 and d_sae={d_sae}, got {top_n!r}.")
    if not 1 <= top_n <= d_sae:
        raise ValueError(f"top_n={top_n} is out of range: each token votes for between 1 and d_sae={d_sae} latents "
                         "(for a TopK SAE, top_n above k adds nothing).")
    return int(top_n)


def pool_codes(codes: torch.Tensor, lengths: torch.Tensor, pooling: str, *, top_n: int = 20,
               keep: torch.Tensor | None = None) -> torch.Tensor:
    """Pool per-token SAE codes into one row per text.

    Args:
        codes: [n_rows, d_sae] codes of consecutive texts' token rows.
        lengths: [n_texts] rows per text (they sum to n_rows).
        pooling: one of POOLINGS. ``"topn"``: each counted row gives a 1 to each of its `top_n` largest *active*
            (> 0) latents; the result counts, per latent, the rows where it was among the top `top_n`.
        keep: optional [n_rows] bool, the rows to pool (e.g. real tokens only); default every row.

    Returns [n_texts, d_sae] float32. A text with no counted row raises a ValueError (it has no features).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {POOLINGS}.")
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if codes.dim() != 2 or int(lengths.sum()) != len(codes):
        raise ValueError(f"codes must be [n_rows, d_sae] with n_rows = sum(lengths) = {int(lengths.sum())}, "
                         f"got shape {tuple(codes.shape)}.")
    codes = codes.float()
    segment = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    if keep is not None:
        keep = torch.as_tensor(keep, dtype=torch.bool)
        if keep.shape != (len(codes),):
            raise ValueError(f"keep must be a bool mask of {len(codes)} rows, got shape {tuple(keep.shape)}.")
        codes, segment = codes[keep], segment[keep]
        lengths = torch.bincount(segment, minlength=len(lengths))
    empty = (lengths == 0).nonzero().flatten()
    if len(empty):
        raise ValueError(f"{len(empty)} text(s) have no token rows to pool (first: text {int(empty[0])}); "
                         "check the texts are not empty and the keep mask keeps at least one row per text.")
    if pooling != "topn":
        return pool_segments(codes, segment, lengths, pooling)
    top_n = _check_top_n(top_n, codes.shape[1])
    values, latents = codes.topk(top_n, dim=1)
    votes = (values > 0).float()  # a TopK SAE has k active latents: an inactive one never gets a vote
    out = torch.zeros(len(lengths), codes.shape[1])
    out.index_put_((segment[:, None].expand_as(latents), latents), votes, accumulate=True)
    return out


def sae_features(sae, tokens: Activations | PaddedTokens, *, hook: str | None = None,
                 poolings: Sequence[str] = POOLINGS, top_n: int = 20, faithful: bool = False,
                 batch_texts: int = 256, progress: bool = True) -> dict[str, sp.csr_matrix]:
    """Encode token rows with `sae` in batches of texts and pool them: ``{pooling: [n_texts, d_sae] CSR}``.

    tokens: a token-level extraction (`saelab.extract(..., pooling="none")`: real tokens only, BOS skipped) or
        `saelab.probing_padded.padded_tokens(...)` (every position of padded batches).
    faithful: with `PaddedTokens`, pool every row, BOS and padding included, as the paper does; otherwise
        pool real tokens only. Plain `Activations` hold real tokens only, so faithful=True needs `PaddedTokens`.
    Features are returned sparse (SAE codes mostly are), so wide SAEs on thousands of texts fit in memory.
    """
    poolings = list(poolings)
    bad = [p for p in poolings if p not in POOLINGS]
    if bad or not poolings:
        raise ValueError(f"Unknown or no pooling(s) {bad}; choose from {POOLINGS}.")
    if "topn" in poolings:
        _check_top_n(top_n, sae.cfg.d_sae)
    kinds = None
    if isinstance(tokens, PaddedTokens):
        kinds, tokens = tokens.kinds, tokens.activations
    elif faithful:
        raise ValueError("faithful=True pools padding and BOS rows, which saelab.extract never keeps: "
                         "get the rows with saelab.probing_padded.padded_tokens(model, texts, hook) first.")
    if tokens.pooling != "none":
        raise ValueError(f"sae_features needs token-level activations (pooling='none'), got {tokens.pooling!r}.")
    hook = hook or getattr(sae.cfg, "hook_name", None) or (tokens.hooks[0] if len(tokens.hooks) == 1 else None)
    if hook not in tokens.hooks:
        raise ValueError(f"No activations for hook {hook!r} (the SAE's hook unless hook= is given); these tokens "
                         f"have {tokens.hooks}. Pass hook= to choose one.")
    x, offsets, lengths = tokens[hook], tokens.offsets, tokens.lengths
    finite = torch.isfinite(x).all(-1)
    if not bool(finite.all()):  # NaN codes would pool into NaN features and fail much later, in the classifier
        first = int((~finite).nonzero()[0, 0])
        raise ValueError(f"Token row {first} of {hook!r} (and {int((~finite).sum()) - 1} more) holds NaN or inf "
                         "values; drop or fix those texts before encoding them.")
    parts: dict[str, list[sp.csr_matrix]] = {p: [] for p in poolings}
    bar = tqdm(total=len(lengths), desc="SAE features", unit="text", disable=not progress)
    with torch.no_grad():
        for start in range(0, len(lengths), batch_texts):
            end = min(start + batch_texts, len(lengths))
            a, b = int(offsets[start]), int(offsets[end])
            codes = sae.encode(x[a:b].to(sae.device, sae.dtype)).float().cpu()
            keep = None if (kinds is None or faithful) else (kinds[a:b] == REAL)
            for pooling in poolings:
                pooled = pool_codes(codes, lengths[start:end], pooling, top_n=top_n, keep=keep)
                parts[pooling].append(sp.csr_matrix(pooled.numpy()))
            bar.update(end - start)
    bar.close()
    return {p: sp.vstack(parts[p], format="csr") for p in poolings}


def binarize(X, threshold: float = 1.0):
    """``X > threshold`` as 0/1 floats, in X's own kind (numpy array, scipy sparse matrix or torch tensor).

    The paper's threshold is 1.0 on top-n counts: a latent is "on" for a text when it won a top-n slot on more
    than one token. Pooled SAE features are non-negative, so a negative threshold (every zero becomes a one) and a
    threshold at or above the largest value (everything becomes zero) are errors.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
    if threshold < 0:
        raise ValueError(f"threshold={threshold} is out of range: pooled SAE features are >= 0, so a negative "
                         "threshold would switch every absent latent on. Use a threshold >= 0 (the paper: 1.0).")
    largest = max_value(X)
    if threshold >= largest:
        raise ValueError(f"threshold={threshold} is out of range: no value exceeds it (the largest is {largest:g}), "
                         "so every feature would be 0. Use a threshold below the largest value.")
    if sp.issparse(X):
        out = X.tocsr(copy=True)
        out.data = (out.data > threshold).astype(np.float32)
        out.eliminate_zeros()
        return out
    if isinstance(X, torch.Tensor):
        return (threshold < X).float()
    return (np.asarray(X) > threshold).astype(np.float32)


def max_value(X) -> float:
    if sp.issparse(X):
        return float(X.max()) if X.nnz else 0.0
    if isinstance(X, torch.Tensor):
        return float(X.max()) if X.numel() else 0.0
    X = np.asarray(X)
    return float(X.max()) if X.size else 0.0


# ------------------------------------------------------------------------------------------------------------------
# Scores and classifiers
# ------------------------------------------------------------------------------------------------------------------


def _as_matrix(X, what: str):
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if sp.issparse(X):
        X = X.tocsr()
        data = X.data
    else:
        X = np.asarray(X, dtype=np.float32)
        data = X
    if X.ndim != 2:
        raise ValueError(f"{what} must be a 2-D feature matrix [n_texts, n_features], got shape {X.shape}.")
    if not np.isfinite(data).all():
        raise ValueError(f"{what} holds NaN or infinite values (an empty text pooled to NaN?); drop those rows.")
    return X


def check_labelled(X, y, what: str = "training") -> tuple[Any, np.ndarray]:
    """Validate a feature matrix and its labels: same length, at least two classes, finite values."""
    X = _as_matrix(X, f"X ({what})")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} labels must be 1-D, got shape {y.shape}.")
    if X.shape[0] != len(y):
        raise ValueError(f"{what} features have {X.shape[0]} rows but there are {len(y)} labels: texts and labels "
                         "must line up one to one.")
    classes = np.unique(y)
    if what == "training" and len(classes) < 2:
        raise ValueError(f"The {what} labels hold a single class ({classes.tolist()}): a classifier needs at least "
                         "two. Check the split (stratify it) or the labels.")
    return X, y


def _logreg(Cs: Sequence[float], cv: int, seed: int, max_iter: int, sparse: bool):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import f1_score, make_scorer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    # Sparse (SAE, TF-IDF) features: MaxAbsScaler puts each column in [0, 1] and keeps the matrix sparse, so one
    # grid of C suits counts, sums and 0/1 features alike. Dense hidden states: standardised, because a few
    # massive dimensions would squash every other column under max-abs scaling (and slow the solver down).
    scaler = MaxAbsScaler() if sparse else StandardScaler()
    if len(Cs) == 1:  # nothing to choose: one fit
        return make_pipeline(scaler, LogisticRegression(C=Cs[0], class_weight="balanced", max_iter=max_iter,
                                                        random_state=seed))
    # The scorer is built by hand: scikit-learn 1.9's "f1_macro" string breaks LogisticRegressionCV on two
    # classes (pos_label passed twice).
    # scikit-learn >= 1.8 warns unless the (pure L2) penalty and the new attribute layout are spelled out
    accepted = inspect.signature(LogisticRegressionCV).parameters
    newer = {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    return make_pipeline(scaler, LogisticRegressionCV(
        Cs=list(Cs), cv=StratifiedKFold(cv, shuffle=True, random_state=seed),
        scoring=make_scorer(f1_score, average="macro"), class_weight="balanced", max_iter=max_iter,
        random_state=seed, n_jobs=min(cv, PROBE_JOBS), **{k: v for k, v in newer.items() if k in accepted}))


def fit_probe(X_train, y_train, X_test, y_test, classifier: str = "logreg", *, Cs: Sequence[float] = DEFAULT_CS,
              cv: int = 5, max_depth: int | None | str = "cv", depths: Sequence[int | None] = TREE_DEPTHS,
              leaves: Sequence[int] = TREE_MIN_LEAF, seed: int = 0, n_boot: int = 1000,
              max_iter: int = 1000) -> ProbeResult:
    """Fit a classifier on the training features and score macro-F1 (with a bootstrap interval) on the test set.

    classifier: ``"logreg"``: class-weighted logistic regression (L2) after scaling, C chosen among `Cs`
        by stratified `cv`-fold cross-validation on macro-F1 (the paper's class-weighted linear probe; with a
        single C there is nothing to choose and it is fitted once). ``"tree"``: a class-weighted decision tree,
        pruned by cross-validation: `max_depth="cv"` (default) picks its depth among `depths` and its
        `min_samples_leaf` among `leaves` by stratified `cv`-fold macro-F1 on the training texts (the paper's
        grid search); an int or None fixes the depth (None = grown until pure, scikit-learn's default).

    `params["cv_f1"]` is the mean cross-validated macro-F1 of the chosen setting on the *training* texts (NaN when
    nothing was chosen): the score to pick variants by, without looking at the test texts.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {classifier!r}; choose one of {CLASSIFIERS}.")
    X_train, y_train = check_labelled(X_train, y_train, "training")
    X_test, y_test = check_labelled(X_test, y_test, "test")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"Training and test features differ in width ({X_train.shape[1]} vs {X_test.shape[1]}).")
    started = time.perf_counter()
    params: dict[str, Any] = {}
    if classifier == "logreg":
        Cs = [float(c) for c in Cs]
        if not Cs or any(c <= 0 for c in Cs):
            raise ValueError(f"Cs must be positive inverse regularisation strengths, got {Cs}.")
        n_min = int(np.bincount(np.unique(y_train, return_inverse=True)[1]).min())
        folds = max(2, min(cv, n_min))
        model = _logreg(Cs, folds, seed, max_iter, sp.issparse(X_train))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*did not converge.*")
            warnings.filterwarnings("ignore", category=UserWarning, message=".*least populated class.*")
            model.fit(X_train, y_train)
        fitted = model[-1]
        params["C"] = float(np.ravel(fitted.C_)[0]) if hasattr(fitted, "C_") else float(fitted.C)
        params["cv_f1"] = _cv_score(fitted)
    else:
        model, params = _tree(X_train, y_train, max_depth, depths, leaves, cv, seed)
    y_pred = model.predict(X_test)
    return ProbeResult(classifier, macro_f1(y_test, y_pred, n_boot=n_boot, seed=seed),
                       float(np.mean(y_pred == y_test)), y_pred, model, int(X_train.shape[1]), len(y_train),
                       len(y_test), params, time.perf_counter() - started)


def _cv_score(fitted) -> float:
    """The mean cross-validated score of the C that LogisticRegressionCV chose (NaN for a plain fit)."""
    scores = getattr(fitted, "scores_", None)
    if scores is None:
        return math.nan
    scores = np.asarray(next(iter(scores.values())) if isinstance(scores, dict) else scores, dtype=float)
    return float(scores.reshape(scores.shape[0], -1).mean(0).max())  # [folds, (l1_ratios,) Cs]


def _tree(X, y, max_depth, depths: Sequence[int | None], leaves: Sequence[int], cv: int, seed: int):
    """A class-weighted decision tree, its depth and leaf size chosen by cross-validation unless max_depth is set."""
    from sklearn.metrics import f1_score, make_scorer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(class_weight="balanced", random_state=seed)
    if max_depth != "cv":
        if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, numbers.Integral)
                                      or max_depth < 1):
            raise ValueError(f"max_depth must be 'cv', None or a positive integer, got {max_depth!r}.")
        model = tree.set_params(max_depth=max_depth).fit(X, y)
        chosen = {"max_depth": max_depth, "min_samples_leaf": 1, "cv_f1": math.nan}
    else:
        if not list(depths) or not list(leaves):
            raise ValueError("depths and leaves must each hold at least one value to choose from.")
        n_min = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
        search = GridSearchCV(tree, {"max_depth": list(depths), "min_samples_leaf": list(leaves)},
                              scoring=make_scorer(f1_score, average="macro"), n_jobs=PROBE_JOBS,
                              cv=StratifiedKFold(max(2, min(cv, n_min)), shuffle=True, random_state=seed))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, message=".*least populated class.*")
            search.fit(X, y)
        model = search.best_estimator_
        chosen = {**search.best_params_, "cv_f1": float(search.best_score_)}
    return model, {"depth": int(model.get_depth()), "leaves": int(model.get_n_leaves()), **chosen}


def _binarize_unchecked(X, threshold: float):
    """Binarize test features at a threshold already validated on the training features (a test set may lack
    values above it, which is no error)."""
    if sp.issparse(X):
        out = X.tocsr(copy=True)
        out.data = (out.data > threshold).astype(np.float32)
        out.eliminate_zeros()
        return out
    return (np.asarray(X) > threshold).astype(np.float32)


def binarize_pair(X_train, X_test, threshold: float = 1.0):
    """Binarize training and test features at one threshold (validated on the training features)."""
    return binarize(X_train, threshold), _binarize_unchecked(_as_matrix(X_test, "X (test)"), threshold)


def top_latents(result: ProbeResult, n: int = 5) -> list[dict[str, Any]]:
    """The latents (feature columns) a fitted logistic-regression probe weighs most, per class: for each class
    the `n` columns with the largest positive weight (in scaled units). Rows: class, latent, weight."""
    if result.classifier != "logreg":
        raise ValueError("top_latents reads logistic-regression weights; fit with classifier='logreg'.")
    scaler, lr = result.model[0], result.model[-1]
    coef = np.atleast_2d(lr.coef_)
    classes = list(lr.classes_)
    if coef.shape[0] == 1 and len(classes) == 2:  # binary: one row of weights for the positive class
        coef = np.vstack([-coef[0], coef[0]])
    rows = []
    for c, label in enumerate(classes):
        for j in np.argsort(-coef[c])[:n]:
            rows.append({"class": label, "latent": int(j), "weight": float(coef[c, j]),
                         "scale": float(scaler.scale_[j])})
    return rows


# ------------------------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------------------------


def tfidf_features(train_texts: Sequence[str], test_texts: Sequence[str], *, ngram_range: tuple[int, int] = (1, 2),
                   min_df: int = 2, max_features: int | None = 50_000):
    """TF-IDF features of 1-2 grams, fitted on the training texts only: (X_train, X_test, vectorizer)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train_texts, test_texts = check_texts(train_texts), check_texts(test_texts)
    vectorizer = TfidfVectorizer(ngram_range=ngram_range, min_df=min_df, max_features=max_features,
                                 sublinear_tf=True)
    return vectorizer.fit_transform(train_texts), vectorizer.transform(test_texts), vectorizer


def take_texts(tokens: Activations, indices: Sequence[int], hooks: Sequence[str] | None = None) -> Activations:
    """A token-level extraction restricted to some texts (in the order of `indices`) and, optionally, hooks."""
    if tokens.pooling != "none":
        raise ValueError("take_texts works on token-level activations (pooling='none').")
    hooks = list(tokens.hooks if hooks is None else hooks)
    missing = [h for h in hooks if h not in tokens.hooks]
    if missing:
        raise ValueError(f"No activations for hook(s) {missing}; these tokens have {tokens.hooks}.")
    indices = torch.as_tensor(list(indices), dtype=torch.long)
    n_texts = len(tokens.lengths)
    outside = [i for i in indices.tolist() if not 0 <= i < n_texts]
    if outside:
        raise ValueError(f"Text indices {outside} are out of range: these tokens hold {n_texts} texts; use indices "
                         f"from 0 to {n_texts - 1}.")
    offsets = tokens.offsets
    rows = torch.cat([torch.arange(int(offsets[i]), int(offsets[i + 1])) for i in indices.tolist()]) \
        if len(indices) else torch.zeros(0, dtype=torch.long)
    return Activations(hooks, "none", {h: tokens.acts[h][rows] for h in hooks}, tokens.lengths[indices].clone(),
                       tokens.token_ids[rows], dict(tokens.meta), None)


__all__ = [
    "CLASSIFIERS",
    "POOLINGS",
    "ZeroShot",
    "binarize",
    "binarize_pair",
    "check_labelled",
    "fit_probe",
    "label_logits",
    "label_token_ids",
    "max_value",
    "pool_codes",
    "sae_features",
    "take_texts",
    "tfidf_features",
    "top_latents",
    "zero_shot",
]
