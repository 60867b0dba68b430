"""`votive export stepfunctions` and the batch events its Distributed Map sends: the template passes cfn-lint
(which checks the state machine against the States language), and votive's handlers answer a batch event with
one result per item, in order, equal to what single requests give."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cloudformation import cfn_lint
from votive.cli import main
from votive.deploy.aws.stepfunctions import MapJob, state_machine_template


@pytest.mark.parametrize("fmt, extra", [("json", []), ("yaml", ["--id-field", "id"]),
                                        ("json", ["--format", "csv", "--max-concurrency", "7"])])
def test_template_passes_cfn_lint(tmp_path, fmt, extra):
    assert main(["export", "stepfunctions", "embed:live", "--input", "s3://corpus/docs.jsonl", "--output",
                 "s3://corpus/out/", "--out", str(tmp_path), "--template-format", fmt, *extra]) == 0
    path = tmp_path / f"template.{fmt}"
    result = cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_cfn_lint_catches_a_broken_state_machine(tmp_path):
    """The check above is not vacuous: cfn-lint reads the definition."""
    template = state_machine_template(MapJob("embed", "s3://corpus/docs.jsonl", "s3://corpus/out/"))
    template["Resources"]["MapStateMachine"]["Properties"]["Definition"]["States"]["Map"]["MaxConcurency"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(template))
    assert "E3601" in cfn_lint(tmp_path / "bad.json").stdout


def test_the_map_state_reads_batches_retries_and_writes_results():
    job = MapJob("embed:live", "s3://corpus/docs.csv", "s3://results/run1/", input_format="csv", field="body",
                 id_field="key", batch_size=32, max_concurrency=50, tolerated_failure_percentage=5)
    template = state_machine_template(job)
    state = template["Resources"]["MapStateMachine"]["Properties"]["Definition"]["States"]["Map"]
    assert state["ItemReader"]["ReaderConfig"] == {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    assert state["ItemReader"]["Parameters"] == {"Bucket": "corpus", "Key": "docs.csv"}
    assert state["ItemBatcher"] == {"MaxItemsPerBatch": 32, "BatchInput": {"field": "body", "id_field": "key"}}
    assert state["MaxConcurrency"] == 50 and state["ToleratedFailurePercentage"] == 5
    assert state["ResultWriter"]["Parameters"] == {"Bucket": "results", "Prefix": "run1/"}
    invoke = state["ItemProcessor"]["States"]["Invoke"]
    assert invoke["Parameters"]["FunctionName"] == "embed:live"
    assert "Lambda.TooManyRequestsException" in invoke["Retry"][0]["ErrorEquals"]


@pytest.mark.parametrize("args, message", [
    (["--input", "docs.jsonl", "--output", "s3://b/o/"], "--input must be s3://BUCKET/KEY"),
    (["--input", "s3://b/d.jsonl", "--output", "s3://b/o/", "--batch-size", "0"], "--batch-size"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    assert main(["export", "stepfunctions", "embed", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------ batch events
def test_the_embeddings_handler_answers_a_batch_event(minilm_dir):
    from votive.handlers import embeddings
    from votive.sources import resolve_source

    handler = embeddings.load_handler({}, source=resolve_source(str(minilm_dir)))
    items = [{"key": f"k{i}", "body": f"document number {i}"} for i in range(5)]
    answer = handler({"Items": items, "BatchInput": {"field": "body", "id_field": "key"}}, None)
    assert [r["id"] for r in answer["results"]] == [item["key"] for item in items]
    single = handler({"input": [item["body"] for item in items]}, None)["data"]
    for result, want in zip(answer["results"], single):
        assert np.array_equal(np.asarray(result["embedding"], np.float32), np.asarray(want["embedding"], np.float32))
    from votive.errors import VotiveFault

    with pytest.raises(VotiveFault, match="batch item 1 has no 'body' field"):
        handler({"Items": [items[0], {"key": "x"}], "BatchInput": {"field": "body"}}, None)
