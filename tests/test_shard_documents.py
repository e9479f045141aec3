"""The documents of a shard index decode back to their text, and the contrastive objective reads the same
paragraphs (the same token ids) from shards as from the text they were tokenized from."""

from __future__ import annotations

import json

import datasets
import pytest
from accelerate import Accelerator
from conftest import REPO

from pretrain.config import parse_config
from pretrain.data.shard_set import load_shard_set
from pretrain.data.text import embedded_documents
from pretrain.data.tokenizer import load_tokenizer
from pretrain.objectives.contrastive import Contrastive
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.prepare.tokenize_cli import train_tokenizer
from pretrain.settings import make_run_config


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard-documents")
    docs = embedded_documents()[:80]
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    train_tokenizer([str(data)], str(root / "tok"), 1024, sample_bytes=400_000)
    tokenize_to_shards([str(data)], root / "shards", str(root / "tok"), shard_tokens=30_000, progress=False)
    return load_shard_set(root / "shards"), docs


def test_documents_decode_back_to_their_text_across_shards_and_views(shards):
    shard_set, docs = shards
    assert len(shard_set.shards) > 1
    assert list(shard_set.document_texts()["text"]) == docs
    head, tail = shard_set.split_at_document(0.2)
    assert list(head.document_texts()["text"]) + list(tail.document_texts()["text"]) == docs
    assert 0 < len(tail.document_texts()) < len(docs)


def test_contrastive_reads_the_same_paragraphs_from_shards_as_from_text(shards, cache_dir):
    shard_set, docs = shards
    cfg = parse_config(
        make_run_config(Contrastive.Config), [], REPO / "recipes" / "contrastive" / "config.yaml"
    )
    objective = Contrastive(cfg, load_tokenizer(str(shard_set.tokenizer_dir)))
    accelerator = Accelerator(cpu=True)
    from_shards = objective.build_dataset(shard_set, accelerator)
    from_text = objective.build_dataset(datasets.Dataset.from_dict({"text": docs}), accelerator)
    assert len(from_shards) == len(from_text) > 100
    for view in ("query", "doc", "text"):
        assert [x.tolist() for x in from_shards[view]] == [x.tolist() for x in from_text[view]]
