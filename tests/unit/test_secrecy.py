"""Secrets: which environment variables count, what tools are given, and masking in text and URIs."""

from __future__ import annotations

from pathlib import Path

from pipeline import secrecy
from pipeline.toolenv import ToolEnv

ENVIRON = {"HF_TOKEN": "hf_abcdefgh", "MLFLOW_TRACKING_PASSWORD": "hunter22", "AWS_SECRET_ACCESS_KEY": "AKIAxyz123",
           "OPENAI_API_KEY": "sk-123456", "GITHUB_TOKEN_2": "ghp_123456", "PATH": "/usr/bin", "HOME": "/root",
           "TOKENIZERS_PARALLELISM": "false", "SHORT_TOKEN": "1"}


def test_secret_names():
    named = {k for k in ENVIRON if secrecy.is_secret_name(k)}
    assert named == {"HF_TOKEN", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY",
                     "GITHUB_TOKEN_2", "SHORT_TOKEN"}  # TOKENIZERS_PARALLELISM is not one


def test_known_values_skip_the_too_short_and_come_longest_first():
    values = secrecy.known(ENVIRON)
    assert "1" not in values and {"hf_abcdefgh", "hunter22", "AKIAxyz123", "sk-123456", "ghp_123456"} <= set(values)
    assert [len(v) for v in values] == sorted((len(v) for v in values), reverse=True)


def test_workers_get_only_the_hub_token_and_servers_none(monkeypatch, tmp_path):
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    env = ToolEnv("x", tmp_path)
    worker = env.environ()
    assert worker["HF_TOKEN"] == "hf_abcdefgh" and worker["PATH"] == "/usr/bin"
    assert not {"MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN_2"} & set(worker)
    server = env.environ({"LLAMA_API_KEY": "qg-own"}, keep_secrets=frozenset())
    assert server["LLAMA_API_KEY"] == "qg-own" and "HF_TOKEN" not in server and server["HOME"] == "/root"


def test_redact_masks_values_and_uri_passwords():
    text = "login hunter22 to postgresql://qg:pa55word@db:5432/mlflow and http://host/x?a=b; hf_abcdefgh."
    assert secrecy.redact(text, ["hunter22", "hf_abcdefgh"]) == \
        "login *** to postgresql://qg:***@db:5432/mlflow and http://host/x?a=b; ***."
    assert secrecy.redact_uris("https://u:p%40ss@mlflow.example:8443/path") == "https://u:***@mlflow.example:8443/path"
    assert secrecy.redact_uris("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


def test_redact_file_leaves_binary_and_unchanged_files_alone(tmp_path):
    text, binary, clean = tmp_path / "a.log", tmp_path / "w.bin", tmp_path / "c.log"
    text.write_text("key qg-secretsecret\n")
    binary.write_bytes(b"\0qg-secretsecret")
    clean.write_text("nothing here\n")
    before = clean.stat().st_mtime_ns
    assert secrecy.redact_tree(tmp_path) == []  # not a secret until this process made it one
    secrecy.register("qg-secretsecret")
    assert secrecy.redact_tree(tmp_path) == [text]
    assert text.read_text() == "key ***\n" and binary.read_bytes() == b"\0qg-secretsecret"
    assert clean.stat().st_mtime_ns == before
