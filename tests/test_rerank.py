"""Cross-encoder rerankers: votive's CrossEncoder against sentence-transformers' scores, and POST /v1/rerank
on every way votive serves a model (the handler itself, `votive serve` in-process and under awslambdaric, a
built Lambda tree, the Modal app).

The folders are rebuilt from the seeds in tests/data/reranker_reference/make_reference.py (numpy only); the
scores, token ids and rankings they are compared with were made by sentence-transformers' CrossEncoder (see
the README there). No torch is imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import votive
from votive.errors import InputError, ModelConfigError, VotiveFault
from votive.handlers import rerank
from votive.models.cross_encoder import CrossEncoder, Ranked
from votive.testing.reranker_folders import RerankerShape, write_reranker_folder
from votive.text.tokenizer_json import longest_first
from votive.text.wordpiece import LibraryTokenizer, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "reranker_reference"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
TOLERANCE = 1e-4  # float32 through two layers, the same math in another order: observed under 2e-6


def _maker():
    spec = importlib.util.spec_from_file_location("make_reranker_reference", DATA / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _maker()
VARIANTS = MAKER.VARIANTS
TEXTS = json.loads((DATA / "pairs.json").read_text(encoding="utf-8"))
PAIRS = [tuple(p) for p in TEXTS["pairs"]]
QUERY, DOCUMENTS = TEXTS["queries"][0], TEXTS["documents"]


@pytest.fixture(scope="module")
def reference():
    with np.load(DATA / "reference.npz") as ref:
        return dict(ref)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, reference) -> dict[str, Path]:
    made_with = str(reference["xlmr/tokenizer_sha256"])
    if hashlib.sha256(MAKER.UNIGRAM_TOKENIZER.read_bytes()).hexdigest() != made_with:
        pytest.fail(f"{MAKER.UNIGRAM_TOKENIZER} changed since reference.npz was made; rerun "
                    "tests/data/reranker_reference/make_reference.py")
    root = tmp_path_factory.mktemp("rerankers")
    return {name: MAKER.write_variant(root / name, name) for name in VARIANTS}


@pytest.fixture(scope="module")
def models(folders) -> dict[str, CrossEncoder]:
    return {name: votive.load(str(folder)) for name, folder in folders.items()}


def _unpadded(rows: np.ndarray) -> list[list[int]]:
    return [[int(x) for x in row if x >= 0] for row in rows]


# --- the model against sentence-transformers ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(VARIANTS))
def test_scores_match_sentence_transformers(models, reference, name):
    model = models[name]
    assert isinstance(model, CrossEncoder) and model.kind == "rerank"
    assert model.max_seq_length == int(reference[f"{name}/max_length"])
    scores, n_tokens = model.predict(PAIRS, batch_size=5)  # batches of mixed lengths: padding must not matter
    expected = reference[f"{name}/scores"]
    assert np.abs(scores - expected).max() < TOLERANCE
    assert n_tokens == int((reference[f"{name}/ids"] >= 0).sum())
    # the same order wherever sentence-transformers' own scores are further apart than the tolerance
    order = np.argsort(-expected, kind="stable")
    gaps = np.diff(expected[order]) < -2 * TOLERANCE
    assert (np.diff(scores[order])[gaps] < 0).all()
    assert np.ptp(expected) > 0.2  # the scores spread: an order to get right


@pytest.mark.parametrize("name", list(VARIANTS))
def test_pairs_tokenize_like_sentence_transformers(models, reference, name):
    """Token ids and token type ids of every pair, truncation included ('longest_first' to max_seq_length)."""
    encoded = models[name].tokenize(PAIRS)
    assert [ids for ids, _ in encoded] == _unpadded(reference[f"{name}/ids"])
    assert [types for _, types in encoded] == _unpadded(reference[f"{name}/types"])


def test_long_pairs_are_truncated_longest_first(models, reference):
    """model_max_length 40 leaves 37 ids for two texts: a long document is cut to what the query leaves, two
    long texts get 18 and 19 (the longer one the odd id), a long query before a short document keeps the
    document whole; as sentence-transformers' tokenizer does."""
    model = models["json"]
    long_query, long_doc = TEXTS["queries"][2], DOCUMENTS[6]
    cases = [(QUERY, long_doc), (long_query, long_doc), (long_doc, long_query), (long_query, DOCUMENTS[0])]
    full = {text: len(model.tokenizer._text_ids(text, "t", None)) for pair in cases for text in pair}
    assert full[long_doc] > 40 and full[long_query] > 40 and full[long_doc] != full[long_query]
    for first, second in cases:
        ids, types = model.tokenize([(first, second)])[0]
        n_first, n_second = types.count(0) - 2, types.count(1) - 1  # [CLS] a [SEP] | b [SEP]
        assert len(ids) == 40
        assert (n_first, n_second) == longest_first(full[first], full[second], 37)
    both = model.tokenize([(long_query, long_doc)])[0][1]
    assert (both.count(0) - 2, both.count(1) - 1) == ((19, 18) if full[long_query] > full[long_doc] else (18, 19))
    ranked = _unpadded(reference["json/ids"])
    assert max(len(r) for r in ranked) == 40 and sum(len(r) == 40 for r in ranked) >= 10


@pytest.mark.parametrize("n1, n2, kept", [  # tokenizers' own cases (utils/truncation.rs), max_length 7
    (0, 0, (0, 0)), (0, 8, (0, 7)), (2, 8, (2, 5)), (4, 2, (4, 2)), (4, 4, (3, 4)), (4, 8, (3, 4)),
    (8, 0, (7, 0)), (8, 2, (5, 2)), (8, 4, (4, 3)), (8, 8, (3, 4)), (2, 4, (2, 4))])
def test_longest_first_keeps_what_tokenizers_keeps(n1, n2, kept):
    assert longest_first(n1, n2, 7) == kept
    assert longest_first(5, 6, 0) == (0, 0)


def test_tokenizers_library_pairs_agree(folders, reference):
    """The fallback for tokenizer.json files votive does not read (XLM-R's Unigram): the library's own pair
    template and longest_first truncation, the same ids."""
    tokenizers = pytest.importorskip("tokenizers")
    library = load_tokenizer(folders["json"], 40, library=lambda: tokenizers)
    assert not isinstance(library, LibraryTokenizer)  # a WordPiece file is read by votive itself...
    library = LibraryTokenizer(tokenizers.Tokenizer.from_file(str(folders["json"] / "tokenizer.json")), 40)
    encoded = library.encode_pair_batch(PAIRS)  # ...so the library is asked directly
    assert [ids for ids, _ in encoded] == _unpadded(reference["json/ids"])
    assert [types for _, types in encoded] == _unpadded(reference["json/types"])
    # and votive's own truncation at its edges: both texts over the budget (longer first, second, equal), empty
    a, b, c = "cat " * 50, "dog sat " * 22, "mat " * 50
    edges = [(a, b), (b, a), (a, c), ("", a), (a, ""), ("", ""), ("the cat", "a dog" * 3)]
    assert load_tokenizer(folders["json"], 40).encode_pair_batch(edges) == library.encode_pair_batch(edges)
    for max_length in (3, 4, 5, 6):  # budgets of 0 to 3 ids for the two texts
        ours = load_tokenizer(folders["json"], max_length).encode_pair_batch(edges)
        assert ours == LibraryTokenizer(tokenizers.Tokenizer.from_file(str(folders["json"] / "tokenizer.json")),
                                        max_length).encode_pair_batch(edges)
    with pytest.raises(InputError, match="pair 1, second text has a lone surrogate at index 1"):
        library.encode_pair_batch([("a", "b"), ("a", "x\ud800")])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rerank_ranks_like_cross_encoder_rank(models, reference, name):
    ranked = models[name].rerank(QUERY, DOCUMENTS)
    assert [r.index for r in ranked] == reference[f"{name}/rank_index"].tolist()
    assert np.abs(np.array([r.score for r in ranked]) - reference[f"{name}/rank_score"]).max() < TOLERANCE
    top = models[name].rerank(QUERY, DOCUMENTS, top_n=3)
    assert top == ranked[:3] and isinstance(top[0], Ranked)
    assert models[name].score([(QUERY, DOCUMENTS[1])])[0] == pytest.approx(ranked[[r.index for r in ranked]
                                                                                   .index(1)].score, abs=1e-6)


def test_identity_and_sigmoid_are_the_same_logit(folders, tmp_path, reference):
    """The vocab folder saves Identity (raw logits); the same weights without the saved activation score the
    sigmoid of them, as sentence-transformers' default for one label."""
    plain = write_reranker_folder(tmp_path / "plain", **{**VARIANTS["vocab"], "activation_fn": None})
    scores = votive.load(str(plain)).score(PAIRS)
    assert np.abs(scores - 1 / (1 + np.exp(-reference["vocab/scores"]))).max() < TOLERANCE
    untrusted = write_reranker_folder(tmp_path / "untrusted", **{**VARIANTS["vocab"], "activation_fn": "my.Act"})
    assert np.abs(votive.load(str(untrusted)).score(PAIRS) - scores).max() == 0  # ST: not trusted, default


@pytest.mark.parametrize("name", ["json", "xlmr"])
def test_scores_on_the_cuda_backend(cuda_ops, folders, reference, name):
    """The same folders on votive's CUDA backend (the CPU emulator here; a real GPU under the gpu mark): token
    types gathered on the device, the first token's states copied back for the head."""
    model = CrossEncoder.from_folder(folders[name], cuda_ops)
    scores = model.score(PAIRS, batch_size=7)
    assert np.abs(scores - reference[f"{name}/scores"]).max() < TOLERANCE


def test_bert_single_sentence_path_is_unchanged(models):
    bert = models["json"].model
    ops = bert.ops
    ids = ops.asarray([[2, 10, 11, 3, 0]], ops.int64)
    mask = ops.asarray([[1, 1, 1, 1, 0]], ops.int64)
    plain = bert.forward(ids, mask)
    typed = bert.forward(ids, mask, ops.asarray([[0, 0, 0, 0, 0]], ops.int64))
    assert np.array_equal(ops.to_numpy(plain), ops.to_numpy(typed))
    other = bert.forward(ids, mask, ops.asarray([[0, 0, 1, 1, 1]], ops.int64))
    assert not np.allclose(ops.to_numpy(other)[0, 2], ops.to_numpy(plain)[0, 2])


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    ({"id2label": {"0": "no", "1": "yes"}, "label2id": {"no": 0, "yes": 1}},
     "num_labels is 2; votive reranks with cross-encoders that give one score"),
    ({"num_labels": 3}, "num_labels is 3"),
    ({"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Softmax"}},
     "activation_fn 'torch.nn.modules.activation.Softmax' is not one votive applies"),
    ({"model_type": "electra"}, "a 'electra' sequence classifier is not a reranker votive runs"),
])
def test_classifiers_votive_cannot_score_exactly_are_refused(tmp_path, changes, message):
    folder = write_reranker_folder(tmp_path / "r", RerankerShape(num_hidden_layers=1), seed=5)
    _edit_config(folder, **changes)
    with pytest.raises(ModelConfigError, match=message):
        votive.load(str(folder))


def test_a_tokenizer_without_a_pair_template_is_refused_at_load(tmp_path):
    folder = write_reranker_folder(tmp_path / "r", RerankerShape(num_hidden_layers=1), seed=5)
    spec = json.loads((folder / "tokenizer.json").read_text())
    del spec["post_processor"]["pair"]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ModelConfigError, match="has no pair template votive reads"):
        votive.load(str(folder))


# --- the handler ----------------------------------------------------------------------------------------------
def _url_event(body, method="POST", path="/v1/rerank") -> dict:
    event = {"version": "2.0", "rawPath": path, "rawQueryString": "", "isBase64Encoded": False,
             "headers": {"content-type": "application/json"}, "requestContext": {"http": {"method": method}}}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


@pytest.fixture(scope="module")
def handler(models):
    return rerank.make_handler(models["json"], max_documents=12, batch_size=4)


def _check_answer(answer: dict, reference, top_n: int, with_documents: bool) -> None:
    assert answer["model"] == "json" and isinstance(answer["id"], str) and answer["id"]
    results = answer["results"]
    assert [r["index"] for r in results] == reference["json/rank_index"][:top_n].tolist()
    scores = np.array([r["relevance_score"] for r in results])
    assert np.abs(scores - reference["json/rank_score"][:top_n]).max() < TOLERANCE
    assert all(("document" in r) == with_documents for r in results)
    if with_documents:
        assert [r["document"]["text"] for r in results] == [DOCUMENTS[r["index"]] for r in results]
    assert answer["usage"]["total_tokens"] == int((reference["json/ids"][: len(DOCUMENTS)] >= 0).sum())


def test_rerank_over_a_function_url_event(handler, reference):
    documents = [d if i % 2 else {"text": d} for i, d in enumerate(DOCUMENTS)]  # Cohere v1 / Jina objects too
    response = handler(_url_event({"model": "any", "query": QUERY, "documents": documents, "top_n": 4,
                                   "return_documents": True}), None)
    assert response["statusCode"] == 200, response["body"]
    _check_answer(json.loads(response["body"]), reference, 4, True)


def test_rerank_by_direct_invoke_and_on_every_path(handler, reference):
    _check_answer(handler({"query": QUERY, "documents": DOCUMENTS}, None), reference, len(DOCUMENTS), False)
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        answer = handler({"path": path, "body": {"query": QUERY, "documents": DOCUMENTS, "top_n": 99}}, None)
        _check_answer(answer, reference, len(DOCUMENTS), False)


def test_health(handler):
    health = json.loads(handler(_url_event(None, "GET", "/health"), None)["body"])
    assert health["status"] == "ok" and health["kind"] == "rerank" and health["model"] == "json"
    assert (health["max_seq_length"], health["max_documents"], health["batch_size"]) == (40, 12, 4)


@pytest.mark.parametrize("body, param, code, message", [
    ({"documents": ["a"]}, "query", "missing_query", "'query' must be a string; it is missing"),
    ({"query": 3, "documents": ["a"]}, "query", "invalid_type", "found a JSON number"),
    ({"query": "", "documents": ["a"]}, "query", "empty_query", "'query' is empty"),
    ({"query": "  \n", "documents": ["a"]}, "query", "empty_query", "'query' is empty"),
    ({"query": "q\ud800", "documents": ["a"]}, "query", "invalid_text", "unpaired UTF-16 surrogate"),
    ({"query": "q"}, "documents", "missing_documents", "'documents' is required"),
    ({"query": "q", "texts": ["a"]}, "documents", "missing_documents", "not TEI's 'texts'"),
    ({"query": "q", "documents": "a"}, "documents", "invalid_type", "must be a list, found a JSON string"),
    ({"query": "q", "documents": []}, "documents", "empty_documents", "empty list"),
    ({"query": "q", "documents": ["a"] * 13}, "documents", "too_many_documents",
     "13 items, more than the 12 one request may send"),
    ({"query": "q", "documents": ["a", 5]}, "documents", "invalid_type", r"documents\[1\] is a JSON number"),
    ({"query": "q", "documents": [{"title": "a"}]}, "documents", "invalid_type",
     r"documents\[0\] is an object without a string 'text'"),
    ({"query": "q", "documents": ["a", "b\udc00"]}, "documents", "invalid_text", r"documents\[1\] contains an"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n", "invalid_value", "'top_n' is 0"),
    ({"query": "q", "documents": ["a"], "top_n": "2"}, "top_n", "invalid_type", "must be an integer"),
    ({"query": "q", "documents": ["a"], "top_n": True}, "top_n", "invalid_type", "must be an integer"),
    ({"query": "q", "documents": ["a"], "return_documents": "yes"}, "return_documents", "invalid_type",
     "true or false"),
    ({"query": "q", "documents": ["a"], "model": 1}, "model", "invalid_type", "'model' must be a string"),
    ({"query": "q", "documents": ["a"], "rank_fields": ["title"]}, "rank_fields", "unsupported_parameter",
     "not supported"),
    ({"query": "q", "documents": ["a"], "max_tokens_per_doc": 10}, "max_tokens_per_doc", "unsupported_parameter",
     "not supported"),
    (["q", "a"], None, "invalid_type", "must be a JSON object, found a JSON array"),
])
def test_bad_requests_are_400_naming_the_field(handler, body, param, code, message):
    response = handler(_url_event(body), None)
    assert response["statusCode"] == 400, response["body"]
    error = json.loads(response["body"])["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert __import__("re").search(message, error["message"]), error["message"]
    if isinstance(body, dict):  # a direct invoke is refused with the same words
        with pytest.raises(VotiveFault, match="Votive.BadRequest") as caught:
            handler(body, None)
        assert error["message"] in caught.value.message


def test_malformed_json_and_wrong_method(handler):
    assert handler(_url_event("{not json"), None)["statusCode"] == 400
    response = handler(_url_event(None, "GET", "/v1/rerank"), None)
    assert response["statusCode"] == 405 and response["headers"]["allow"] == "POST"


def test_settings_and_model_kind_are_checked_at_init(folders, tmp_path):
    from votive.testing.synthetic import write_bert_folder

    handler = rerank.load_handler({"VOTIVE_MODEL": str(folders["json"]), "VOTIVE_MAX_DOCUMENTS": "2"})
    response = handler(_url_event({"query": "q", "documents": ["a", "b", "c"]}), None)
    assert json.loads(response["body"])["error"]["code"] == "too_many_documents"
    with pytest.raises(VotiveFault, match="VOTIVE_MAX_DOCUMENTS='0' is not a positive integer"):
        rerank.load_handler({"VOTIVE_MODEL": str(folders["json"]), "VOTIVE_MAX_DOCUMENTS": "0"})
    with pytest.raises(VotiveFault, match="Votive.ConfigError: VOTIVE_MODEL is not set"):
        rerank.load_handler({})
    embedder = write_bert_folder(tmp_path / "embedder")
    with pytest.raises(VotiveFault, match="is not a cross-encoder reranker \\(it loads as kind 'embedding'"):
        rerank.load_handler({"VOTIVE_MODEL": str(embedder)})


def test_a_model_failure_is_a_500(folders):
    class Broken:
        kind, model_id, backend, max_seq_length = "rerank", "broken", "numpy", 8

        def predict(self, pairs, batch_size=32):
            return np.array([np.nan] * len(pairs), np.float32), 1

    response = rerank.make_handler(Broken())(_url_event({"query": "q", "documents": ["a"]}), None)
    assert response["statusCode"] == 500 and json.loads(response["body"])["error"]["code"] == "model_error"


# --- picking the handler by itself, and serving it everywhere ---------------------------------------------------
def test_serve_build_and_modal_pick_the_rerank_handler(folders):
    from votive.builders.model_files import collect_model
    from votive.cli import serve as cli
    from votive.sources import resolve_source

    assert cli.default_handler(resolve_source(str(folders["json"]))) == cli.RERANK_HANDLER
    model_files = collect_model(str(folders["vocab"]))
    assert (model_files.kind.name, model_files.kind.handler) == ("reranker", "votive.handlers.rerank.handler")
    assert [name for name, _ in model_files.files] == ["config.json", "model.safetensors", "tokenizer_config.json",
                                                       "vocab.txt"]
    assert set(model_files.unused_requirements) == {"jinja2", "tokenizers"}


def _post(url: str, path: str, body) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _check_served(url: str, reference) -> None:
    status, answer = _post(url, "/v1/rerank", {"model": "x", "query": QUERY, "documents": DOCUMENTS, "top_n": 3,
                                                "return_documents": True})
    assert status == 200, answer
    _check_answer(answer, reference, 3, True)
    status, answer = _post(url, "/v1/rerank", {"query": "", "documents": ["a"]})
    assert status == 400 and answer["error"]["code"] == "empty_query"
    with urllib.request.urlopen(url + "/health", timeout=30) as response:
        assert json.loads(response.read())["kind"] == "rerank"


@pytest.mark.parametrize("options, mode", [([], "in-process"), (["--runtime-api"], "awslambdaric runtime")])
def test_votive_serve_answers_rerank(folders, reference, options, mode):
    """`votive serve FOLDER` in its own process picks the rerank handler; with --runtime-api it runs under the
    real awslambdaric client behind the Runtime API emulator."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "votive.cli", "serve", str(folders["json"]), "--port", "0", *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready = process.stdout.readline()
        assert "votive: serving votive.handlers.rerank.handler at http://127.0.0.1:" in ready, \
            process.stderr.read() if process.poll() is not None else ready
        assert f"(1 environment(s), {mode})" in ready
        _check_served(ready.split(" at ", 1)[1].split()[0], reference)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()


@pytest.mark.skipif(PY not in __import__("votive.builders.targets", fromlist=["x"]).LAMBDA_RUNTIMES,
                    reason=f"Python {PY} is not a Lambda runtime")
def test_built_lambda_tree_answers_rerank(folders, reference, tmp_path):
    """`votive build lambda FOLDER`: the real build, unpacked into a Lambda-like tree and run isolated under
    awslambdaric, serves /v1/rerank (function URL) and a direct invoke."""
    from votive.builders.lambda_build import LambdaTarget, build_lambda
    from votive.emulators.function_url import FunctionUrlServer
    from votive.emulators.local_tree import LambdaTree

    build = build_lambda(str(folders["json"]), tmp_path / "build", LambdaTarget(arch="x86_64", python=PY))
    assert build.manifest["model"]["kind"] == "reranker"
    tree = LambdaTree(tmp_path / "lambda", PY)
    tree.install_build(build.out)
    tree.install_runtime_packages()
    with tree.emulator(sys.executable, init_timeout_s=120) as function:
        server = FunctionUrlServer(function)
        server.start()
        try:
            _check_served(server.url, reference)
            outcome = function.invoke({"query": QUERY, "documents": DOCUMENTS})
        finally:
            server.stop()  # stops the function too
    assert outcome.ok, outcome.error
    _check_answer(json.loads(outcome.payload), reference, len(DOCUMENTS), False)


def test_modal_app_serves_rerank(folders, reference, tmp_path):
    """`votive build modal FOLDER`: the app constructs offline with the rerank handler, and its own votive copy
    and model folder answer /v1/rerank through the ASGI adapter the app's endpoint serves with."""
    pytest.importorskip("modal")
    from votive.builders.modal_build import ModalTarget, build_modal

    out = tmp_path / "modal"
    manifest = build_modal(str(folders["json"]), out, ModalTarget(app_name="rerank-app"))
    assert manifest["model"]["serves_with"] == "votive.handlers.rerank.handler"
    program = f"""
import asyncio, json, os, pathlib, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {str(out)!r})
import modal_app, votive
assert votive.__file__.startswith({str(out)!r}), votive.__file__
os.environ["VOTIVE_MODEL"] = str(pathlib.Path({str(out)!r}, "model",
                                 pathlib.PurePosixPath(modal_app.MODEL_PATH).relative_to(modal_app.MODEL_ROOT)))
import importlib
from votive.handlers.asgi import lambda_asgi_app
module = importlib.import_module(modal_app.HANDLER_MODULE)
app = lambda_asgi_app(lambda event, context: module.handler(event, context))
def call(method, path, body=b""):
    sent, incoming = [], [{{"type": "http.request", "body": body, "more_body": False}}]
    async def receive():
        return incoming.pop(0) if incoming else {{"type": "http.disconnect"}}
    async def send(message):
        sent.append(message)
    scope = {{"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": [(b"content-type", b"application/json")]}}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])
body = json.dumps({{"query": {QUERY!r}, "documents": {DOCUMENTS!r}, "top_n": 3, "return_documents": True}})
print(json.dumps({{"app": modal_app.app.name, "module": modal_app.HANDLER_MODULE,
                  "rerank": call("POST", "/v1/rerank", body.encode()),
                  "bad": call("POST", "/v1/rerank", b'{{"query": "q", "documents": []}}')}}))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert (facts["app"], facts["module"]) == ("rerank-app", "votive.handlers.rerank")
    status, answer = facts["rerank"]
    assert status == 200
    _check_answer(answer, reference, 3, True)
    assert facts["bad"][0] == 400 and facts["bad"][1]["error"]["code"] == "empty_documents"
