"""Backend choice, command lines, and the errors a user meets before any model loads."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from unfork.errors import MissingExtraError, UserError
from unfork.models import llama_tools
from unfork.serve import backends, llama_cpp
from unfork.serve.ports import PortInUseError, check_port_free, free_port


@pytest.mark.parametrize(("requested", "fmt", "vllm", "cuda", "expected"), [
    ("auto", "gguf", True, True, "llama-cpp"),
    ("auto", "gguf", False, False, "llama-cpp"),
    ("auto", "hf", True, True, "vllm"),
    ("auto", "hf", True, False, "transformers"),
    ("auto", "hf", False, True, "transformers"),
    ("auto", "hf", False, False, "transformers"),
    ("transformers", "hf", True, True, "transformers"),
    ("vllm", "hf", False, False, "vllm"),  # chosen explicitly: the install check reports it later
    ("llama-cpp", "gguf", False, False, "llama-cpp"),
])
def test_choose_backend(requested, fmt, vllm, cuda, expected):
    assert backends.choose_backend(requested, fmt, vllm=vllm, cuda=cuda) == expected


@pytest.mark.parametrize(("requested", "fmt", "needle"), [
    ("llama-cpp", "hf", "serves GGUF files"),
    ("transformers", "gguf", "serves Hugging Face folders"),
    ("vllm", "gguf", "serves Hugging Face folders"),
    ("tgi", "hf", "unknown backend"),
])
def test_backend_format_mismatch_is_a_clear_error(requested, fmt, needle):
    with pytest.raises(UserError, match=needle):
        backends.choose_backend(requested, fmt, vllm=True, cuda=True)


def test_llama_server_command_uses_own_template_slots_and_threads():
    cmd = llama_cpp.llama_server_command("/x/llama-server", "/m/q.gguf", host="127.0.0.1", port=9000,
                                         alias="qwen", parallel=8, ctx_size=8192, threads=2)
    assert cmd[0] == "/x/llama-server"
    pairs = {cmd[i]: cmd[i + 1] for i in range(1, len(cmd) - 1) if cmd[i].startswith("--")}
    assert pairs["--model"] == "/m/q.gguf"
    assert pairs["--port"] == "9000" and pairs["--host"] == "127.0.0.1"
    assert pairs["--parallel"] == "8" and pairs["--ctx-size"] == "8192"
    assert pairs["--threads"] == "2" and pairs["--alias"] == "qwen"
    assert "--jinja" in cmd and "--cont-batching" in cmd and "--no-webui" in cmd
    assert "--chat-template" not in cmd  # never replace the model's template
    assert pairs["--cors-origins"] == "localhost"
    with_ui = llama_cpp.llama_server_command("s", "m", host="h", port=1, alias="a", parallel=1, ctx_size=512,
                                             webui=True)
    assert "--no-webui" not in with_ui
    assert "--kv-unified" in cmd and "--no-kv-unified" not in cmd  # any one request may use the whole context
    own = llama_cpp.llama_server_command("s", "m", host="h", port=1, alias="a", parallel=8, ctx_size=16384,
                                         shared_context=False)
    assert "--no-kv-unified" in own and "--kv-unified" not in own


def test_api_key_goes_in_the_environment_not_argv(fake_llama, fake_gguf):
    ref = backends.resolve(str(fake_gguf))
    spec = backends.build_spec("llama-cpp", ref, host="127.0.0.1", port=8123, api_key="s3cret")
    assert "s3cret" not in " ".join(spec.argv)
    assert spec.env["LLAMA_API_KEY"] == "s3cret"
    assert spec.argv[0] == str(fake_llama)
    assert spec.model_id == "tiny-model"


def test_llama_server_gives_memory_back_unless_the_user_tuned_malloc(fake_llama, fake_gguf, monkeypatch):
    ref = backends.resolve(str(fake_gguf))
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    spec = backends.build_spec("llama-cpp", ref, host="127.0.0.1", port=8123)
    assert spec.env == {"MALLOC_TRIM_THRESHOLD_": "131072"}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "999")
    assert "MALLOC_TRIM_THRESHOLD_" not in backends.build_spec("llama-cpp", ref, host="h", port=1).env


def test_transformers_and_vllm_commands(tiny_folder):
    ref = backends.resolve(str(tiny_folder))
    spec = backends.build_spec("transformers", ref, host="0.0.0.0", port=8001, api_key="k", ctx_size=2048)
    assert spec.argv[1:3] == ["-m", "unfork.serve.hf_app"]
    assert spec.argv[spec.argv.index("--ctx-size") + 1] == "2048"
    assert spec.env == {"UNFORK_SERVE_API_KEY": "k"}
    spec = backends.build_spec("vllm", ref, host="127.0.0.1", port=8002, api_key="k", parallel=16,
                               model_id="student")
    assert spec.argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert spec.argv[spec.argv.index("--served-model-name") + 1] == "student"
    assert spec.argv[spec.argv.index("--max-num-seqs") + 1] == "16"
    assert spec.env == {"VLLM_API_KEY": "k"}


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "student-hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_resolve_paths(fake_gguf, tiny_folder, tmp_path):
    assert backends.resolve(str(fake_gguf)).format == "gguf"
    assert backends.resolve(str(tiny_folder)) == backends.ModelRef("student-hf", tiny_folder.resolve(), "hf")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(UserError, match="GGUF file"):
        backends.resolve(str(junk))
    with pytest.raises(UserError, match="no such file"):
        backends.resolve(str(tmp_path / "missing.gguf"), download=False)


def test_missing_llama_server_names_the_build_script(monkeypatch, tmp_path):
    monkeypatch.delenv("UNFORK_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(llama_tools, "llama_cpp_dirs", lambda: [tmp_path / "nothing"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(llama_cpp.BackendNotInstalledError) as info:
        llama_cpp.find_llama_server()
    assert "build_llama_cpp.sh" in str(info.value)


def test_env_var_must_point_at_an_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("UNFORK_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(llama_cpp.BackendNotInstalledError, match="UNFORK_LLAMA_SERVER"):
        llama_cpp.find_llama_server()
    exe = tmp_path / "llama-server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("UNFORK_LLAMA_SERVER", str(exe))
    assert llama_cpp.find_llama_server() == exe


def test_path_is_the_last_resort(monkeypatch, tmp_path):
    monkeypatch.delenv("UNFORK_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(llama_tools, "llama_cpp_dirs", lambda: [tmp_path / "nothing"])
    exe = tmp_path / "llama-server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert llama_cpp.find_llama_server() == exe


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setattr(backends, "vllm_installed", lambda: False)
    with pytest.raises(MissingExtraError, match=r"unfork\[vllm\]"):
        backends.check_installed("vllm")


def test_missing_transformers_names_the_extra(monkeypatch):
    real = backends.importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"unfork\[transformers\]"):
        backends.check_installed("transformers")


def test_taken_port_is_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", free_port())


def test_unknown_address_is_reported():
    with pytest.raises(UserError, match="cannot listen on"):
        check_port_free("203.0.113.7", free_port())


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:80"), ("0.0.0.0", "http://127.0.0.1:80"), ("::", "http://[::1]:80"),
    ("localhost", "http://localhost:80"),
])
def test_base_url(host, url):
    assert backends.base_url(host, 80) == url
