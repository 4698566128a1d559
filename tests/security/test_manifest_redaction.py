"""A password in ``--endpoint-url`` reaches neither the dataset folder nor the command's output."""

from __future__ import annotations

import json

from tests.sdg.fake_teacher import scripted_teacher
from tests.sdg.test_cli_generate import generate_args, invoke
from unfork.taxonomy.examples import prepare_example_taxonomy


def test_the_dataset_folder_holds_no_password(tmp_path):
    taxonomy = prepare_example_taxonomy(tmp_path / "taxonomy")
    out = tmp_path / "ds"
    with scripted_teacher() as fake:
        url = fake.url.replace("http://", "http://user:s3cret@")
        res = invoke(*generate_args(taxonomy, [url], out, "--num-samples", "2"))
        assert res.exit_code == 0, res.output
    assert "s3cret" not in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert url.replace("s3cret", "***") in json.dumps(manifest)
    leaked = [p for p in out.rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]
    assert leaked == []
