"""Hostile or broken contribution files: each one is a clear message on that file, never a crash."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.taxonomy.qna_samples import dump, knowledge
from tests.taxonomy.test_validate import SKILL
from unfork.taxonomy.messages import FileReport, Message
from unfork.taxonomy.output import format_message
from unfork.taxonomy.validate import validate_file, validate_files


def leaf(root: Path, text: str | bytes, where: str = "compositional_skills/demo/qna.yaml") -> Path:
    path = root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def unfork(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "unfork", *args], capture_output=True, text=True, cwd=cwd)


# ---------------------------------------------------------------- 1. infinite version


@pytest.mark.parametrize("version", [".inf", "-.inf", "1.0e+400", ".nan"])
def test_infinite_version_is_an_error_on_that_file(tmp_path, version):
    bad = leaf(tmp_path, SKILL.replace("version: 3", f"version: {version}"), "compositional_skills/bad/qna.yaml")
    good = leaf(tmp_path, SKILL, "compositional_skills/good/qna.yaml")
    reports = validate_files([bad, good], tmp_path)
    assert not reports[0].ok and reports[1].ok
    assert ("schema.type", 1, 10) in [(m.rule, m.line, m.column) for m in reports[0].errors], reports[0].errors


# ---------------------------------------------------------------- 2. symlink loops


def test_symlink_loop_is_an_error_and_the_rest_is_validated(tmp_path):
    good = leaf(tmp_path, SKILL, "compositional_skills/good/qna.yaml")
    loop = tmp_path / "compositional_skills" / "loop"
    loop.mkdir()
    os.symlink("other", loop / "qna.yaml")
    os.symlink("qna.yaml", loop / "other")
    reports = validate_files([loop / "qna.yaml", good], tmp_path)
    assert [m.rule for m in reports[0].errors] == ["read.symlink-loop"]
    assert "loop" in reports[0].errors[0].message
    assert reports[1].ok
    reports = validate_files([loop / "qna.yaml"], None)
    assert [m.rule for m in reports[0].errors] == ["read.symlink-loop"]


# ---------------------------------------------------------------- 3. links out of the taxonomy


def test_symlinked_top_folder_leading_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    leaf(outside, SKILL, "demo/qna.yaml")
    root = tmp_path / "tax"
    root.mkdir()
    os.symlink(outside, root / "compositional_skills")
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(root))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[read.symlink]" in proc.stdout and "outside the taxonomy" in proc.stdout
    # an explicit path through the linked folder is refused as well
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(root), str(root / "compositional_skills/demo/qna.yaml"))
    assert proc.returncode == 1 and "[read.symlink]" in proc.stdout, proc.stdout


def test_symlinked_folder_inside_the_taxonomy_still_works(tmp_path):
    leaf(tmp_path, SKILL, "compositional_skills/real/qna.yaml")
    os.symlink(tmp_path / "compositional_skills" / "real", tmp_path / "compositional_skills" / "alias")
    report = validate_file(tmp_path / "compositional_skills" / "alias" / "qna.yaml", tmp_path)
    assert report.ok, report.errors


def test_explicit_symlink_argument_leading_outside_is_refused(tmp_path):
    outside = leaf(tmp_path, SKILL, "elsewhere/secret.yaml")
    tax = tmp_path / "tax"
    link = tax / "compositional_skills" / "x" / "qna.yaml"
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    # no taxonomy root configured: the tree is the one the file's path names
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(tmp_path / "nowhere"), str(link))
    assert proc.returncode == 1 and "[read.symlink]" in proc.stdout, proc.stdout + proc.stderr
    assert [m.rule for m in validate_file(link).errors] == ["read.symlink"]
    # a lone link outside any taxonomy, given by name, leads outside its folder
    lone = tmp_path / "lone" / "qna.yaml"
    lone.parent.mkdir()
    os.symlink(outside, lone)
    assert [m.rule for m in validate_file(lone).errors] == ["read.symlink"]
    # a plain file outside the taxonomy root is still read
    assert validate_file(leaf(tmp_path, SKILL, "plain/compositional_skills/y/qna.yaml"), tax).ok


# ---------------------------------------------------------------- 4. github properties


@pytest.mark.parametrize("name", ["a\nb", "a::error file=x::pwned", "a%0Ab", "a,line=1", "a\rb"])
def test_github_properties_are_escaped(name):
    report = FileReport(path=f"compositional_skills/{name}/qna.yaml")
    line = format_message(report, Message(2, 3, "schema.type", "bad\nthing", hint="fix"), "github")
    assert "\n" not in line and "\r" not in line
    assert line.count("::") == 2  # the command's own two separators, nothing smuggled in
    props = line.split("::")[1]
    assert props.startswith("error file=compositional_skills/") and props.endswith(",line=2,col=3,title=schema.type")
    file_prop = props[len("error file="):-len(",line=2,col=3,title=schema.type")]
    assert "," not in file_prop and ":" not in file_prop
    unescaped = (file_prop.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":")
                 .replace("%2C", ",").replace("%25", "%"))
    assert unescaped == report.path


def test_github_plain_path_is_unchanged():
    line = format_message(FileReport(path="compositional_skills/a/qna.yaml"),
                          Message(7, 9, "lint.trailing-spaces", "x", hint="y"), "github")
    assert line == ("::error file=compositional_skills/a/qna.yaml,line=7,col=9,title=lint.trailing-spaces::"
                    "7:9 x (lint.trailing-spaces). Hint: y")


# ---------------------------------------------------------------- 5. terminal escapes


def test_control_characters_are_shown_escaped_in_text(tmp_path):
    text = SKILL.replace("task_description", '"task_\\e[31mdescription\\x9b"')
    path = leaf(tmp_path, text, "compositional_skills/ev\x1bil/qna.yaml")
    report = validate_file(path, tmp_path)
    assert not report.ok
    lines = [format_message(report, m, "text") for m in report.errors]
    assert lines and all("\x1b" not in ln and "\x9b" not in ln for ln in lines)
    assert any("task_\\x1b[31mdescription\\x9b" in ln for ln in lines), lines
    assert all(ln.startswith("compositional_skills/ev\\x1bil/qna.yaml:") for ln in lines)


def test_control_characters_in_the_ok_line(tmp_path):
    leaf(tmp_path, SKILL, "compositional_skills/ok\x1b]0;x\x07/qna.yaml")
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "ok\\x1b]0;x\\x07/qna.yaml: ok" in proc.stdout


def test_control_characters_in_the_diff_listing(tmp_path):
    leaf(tmp_path, SKILL, "compositional_skills/d\x1b[2J/qna.yaml")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "base"], check=True)
    proc = unfork("taxonomy", "diff", "--taxonomy-path", str(tmp_path), "--taxonomy-base", "HEAD")
    assert "\x1b" not in proc.stdout, proc.stdout
    assert "  compositional_skills/d\\x1b[2J/qna.yaml" in proc.stdout, proc.stdout + proc.stderr


def test_plain_text_output_is_unchanged():
    line = format_message(FileReport(path="compositional_skills/é/qna.yaml"),
                          Message(1, 2, "r.x", "café 'ü'", hint="h"), "text")
    assert line == "compositional_skills/é/qna.yaml:1:2: error café 'ü' [r.x]\n    hint: h"


# ---------------------------------------------------------------- 6. merge keys


MERGED = """\
version: 3
task_description: Write short poems.
created_by: ada
seed_examples:
  - &base
    question: Q1?
    answer: A1.
  - <<: *base
    question: Q2?
  - <<: [*base]
    question: Q3?
  - <<: {question: 'Q4?', answer: 1}
    answer: A4.
  - question: Q5?
    answer: A5.
"""


def test_merge_keys_are_resolved_like_pyyaml(tmp_path):
    report = validate_file(leaf(tmp_path, MERGED), tmp_path)
    assert report.ok, [str(m) for m in report.errors]
    # the same document with duplicates would be rejected: the merge really is resolved
    dup = MERGED.replace("question: Q2?", "question: Q1?")
    assert yaml.safe_load(dup)["seed_examples"][1] == {"question": "Q1?", "answer": "A1."}
    assert "schema.unique" in [m.rule for m in validate_file(leaf(tmp_path, dup), tmp_path).errors]


@pytest.mark.parametrize("text", [
    "a: &a {x: 1, y: 2}\nb: {<<: *a, y: 3, z: 4}\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc: {<<: [*a, *b], z: 0}\n",
    "a: &a {x: 1}\nb: &b {<<: *a, y: 1}\nc: {<<: *b, x: 9}\n",
    "b: {z: 0, <<: {x: 1, z: 5}, w: 2}\n",
    "a: &a {x: 1, x: 2}\nb: {<<: *a}\n",
    "l:\n  - &a {q: 1}\n  - {<<: *a, r: 2}\n  - {<<: [{s: 1}, *a]}\n",
    "a: &a {1: one, true: t}\nb: {<<: *a, 1.0: uno}\n",
    "a: &x {k: 1, <<: *x, j: 2}\n",
    "a: &x {k: 1}\nb: {<<: [*x, *x], k: 3}\n",
    "!!merge x: {a: 1}\nb: 2\n",
    "x: {a: 1}\n'<<': 5\n",
    "m: &m {a: 1}\nn: {? !<tag:yaml.org,2002:%6Derge> y : *m}\n",
])
def test_merge_resolution_matches_pyyaml(text):
    from unfork.taxonomy import reader

    node, problems = reader.compose(text)
    assert not problems
    ours, _ = reader.to_python(node)
    theirs = yaml.safe_load(text)
    assert ours == theirs and repr(ours) == repr(theirs)


def test_merged_in_values_are_checked(tmp_path):
    text = MERGED.replace("  - <<: *base\n    question: Q2?\n", "  - <<: {question: 'Q2?', answer: 7}\n")
    errors = validate_file(leaf(tmp_path, text), tmp_path).errors
    assert ("schema.type", "seed_examples[1].answer") in [(m.rule, m.yaml_path) for m in errors], errors


def test_top_level_merge_gives_the_version(tmp_path):
    text = "defaults: &d {version: 3}\n" + SKILL.replace("version: 3\n", "<<: *d\n")
    report = validate_file(leaf(tmp_path, text), tmp_path)
    assert report.version == 3
    assert [m.rule for m in report.errors] == ["schema.unknown-key"]  # 'defaults', as InstructLab says


@pytest.mark.parametrize("value", ["1", "[1]", "[{a: 1}, x]"])
def test_merge_of_a_non_mapping_is_an_error(tmp_path, value):
    text = SKILL.replace("  - question: Q1?\n", f"  - <<: {value}\n    question: Q1?\n")
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)
    errors = validate_file(leaf(tmp_path, text), tmp_path).errors
    assert [m.rule for m in errors] == ["yaml.merge"] and errors[0].line == 5


def test_merge_bomb_is_refused(tmp_path):
    # each mapping merges the one before: the copies grow with the square of the chain
    lines = ["version: 3", "a0: &a0 {k0: v}"]
    lines += [f"a{i}: &a{i} {{<<: *a{i - 1}, k{i}: v}}" for i in range(1, 1000)]
    report = validate_file(leaf(tmp_path, "\n".join(lines) + "\n"), tmp_path)
    assert [m.rule for m in report.errors] == ["yaml.alias-bomb"]


def test_long_merge_chain_does_not_recurse(tmp_path):
    lines = ["a0: &a0 {k0: v}"] + [f"a{i}: &a{i} {{<<: *a{i - 1}}}" for i in range(1, 3000)]
    report = validate_file(leaf(tmp_path, "\n".join(lines) + "\n"), tmp_path)
    assert "yaml.syntax" not in [m.rule for m in report.errors]


def test_self_merge_does_not_hang(tmp_path):
    report = validate_file(leaf(tmp_path, "version: 3\nx: &x {<<: *x, a: 1}\n"), tmp_path)
    assert not report.ok


# ---------------------------------------------------------------- 7. document.commit and document.repo


def _knowledge_with(tmp_path, **document) -> list[tuple[str, int, int, str]]:
    doc = knowledge(random.Random(5))
    doc["document"].update(document)
    report = validate_file(leaf(tmp_path, dump(doc), "knowledge/k/qna.yaml"), tmp_path)
    return [(m.rule, m.line, m.column, m.yaml_path) for m in report.errors]


@pytest.mark.parametrize("commit", ["main", "v1.0", "HEAD~1", "abc", "0123abcg", "a" * 65])
def test_commit_that_is_not_a_sha_is_an_error(tmp_path, commit):
    errors = _knowledge_with(tmp_path, commit=commit)
    assert len(errors) == 1 and errors[0][0] == "document.commit" and errors[0][3] == "document.commit", errors
    assert errors[0][1] > 1 and errors[0][2] == 11


@pytest.mark.parametrize("commit", ["abcd", "0123abcd", "A" * 40, "f" * 64])
def test_commit_shas_are_accepted(tmp_path, commit):
    assert _knowledge_with(tmp_path, commit=commit) == []


@pytest.mark.parametrize("repo", ["ext::sh -c touch% /tmp/pwned", "ftp://example.com/x.git",
                                  "fd::7", "HTTPS://example.com/x.git", "ext::sh -c x://"])
def test_repo_transport_generation_refuses_is_an_error(tmp_path, repo):
    errors = _knowledge_with(tmp_path, repo=repo)
    if "://" not in repo:  # generation reads it as a path in the taxonomy: nothing runs
        assert errors == []
        return
    assert len(errors) == 1 and errors[0][0] == "document.repo" and errors[0][2] == 9, errors


@pytest.mark.parametrize("repo", ["https://github.com/a/b.git", "http://x/y", "ssh://git@host/r.git",
                                  "git://host/r", "file:///srv/docs", "git+ssh://host/r", "ssh+git://host/r",
                                  "git@github.com:a/b.git", ".unfork/docs/marrowvey", "/abs/docs"])
def test_repo_transports_generation_allows(tmp_path, repo):
    assert _knowledge_with(tmp_path, repo=repo) == []


def test_document_checks_agree_with_generation():
    from unfork.documents import fetch as documents

    for commit in ["abcd", "abc", "g" * 40, "a" * 64, "a" * 65, " abcd ", "0123abcd"]:
        from unfork.taxonomy.schema import commit_problem

        try:
            documents._check_commit(commit)
            accepted = True
        except Exception:
            accepted = False
        assert accepted == (commit_problem(commit) is None), commit


# ---------------------------------------------------------------- 8. folders named qna.yaml, empty paths


def test_folder_named_qna_yaml_inside_the_taxonomy_is_an_error(tmp_path):
    (tmp_path / "compositional_skills" / "x" / "qna.yaml").mkdir(parents=True)
    proc = unfork("taxonomy", "validate", "--taxonomy-path", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "compositional_skills/x/qna.yaml:1:1: error" in proc.stdout and "folder" in proc.stdout


def test_folder_named_qna_yaml_as_argument_is_a_usage_error(tmp_path):
    folder = tmp_path / "qna.yaml"
    folder.mkdir()
    proc = unfork("taxonomy", "validate", str(folder), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "folder" in proc.stderr


def test_empty_path_argument_is_a_usage_error(tmp_path):
    proc = unfork("taxonomy", "validate", "", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "empty" in proc.stderr


# ---------------------------------------------------------------- 9. UTF-16


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_file_is_named_as_such(tmp_path, encoding):
    report = validate_file(leaf(tmp_path, SKILL.encode(encoding)), tmp_path)
    assert [m.rule for m in report.errors] == ["read.encoding"]
    assert "UTF-16" in report.errors[0].message and "UTF-8" in report.errors[0].hint


def test_binary_file_is_still_binary(tmp_path):
    report = validate_file(leaf(tmp_path, b"version: 3\n\x00\x01\x02binary"), tmp_path)
    assert [m.rule for m in report.errors] == ["read.binary"]


# ---------------------------------------------------------------- 10. complex keys


def test_complex_key_is_printed_as_yaml(tmp_path):
    report = validate_file(leaf(tmp_path, SKILL + "? [a, b]\n: c\n"), tmp_path)
    unknown = [m for m in report.errors if m.rule == "schema.unknown-key"]
    assert [m.message for m in unknown] == ["unknown field '[a, b]'"]
    assert "Node" not in unknown[0].hint


def test_complex_key_with_an_alias_bomb_stays_quick(tmp_path):
    items = ["&a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        items.append(f"&{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    report = validate_file(leaf(tmp_path, SKILL + "? [" + ", ".join(items) + "]\n: v\n"), tmp_path)
    assert not report.ok
