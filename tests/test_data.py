"""Raw text loading: every supported source gives the same `text` documents."""

from __future__ import annotations

import json

import datasets
import pytest

from pretrain.data.text import DataError, _materialize_stream, embedded_documents, load_text_file

DOCS = ["First document.\nIt has two lines.", "Second document here.", "Third, with ünïcode — fine."]


def test_txt_jsonl_parquet_and_saved_dir_agree(tmp_path):
    (tmp_path / "d.txt").write_text("\n\n".join(DOCS) + "\n")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    datasets.Dataset.from_dict({"text": DOCS}).to_parquet(str(tmp_path / "d.parquet"))
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "saved"))
    for name in ("d.txt", "d.jsonl", "d.parquet", "saved"):
        assert load_text_file(str(tmp_path / name))["text"] == DOCS, name


def test_wikitext_headings_start_documents(tmp_path):
    text = (
        " = Alpha = \n\n Alpha text .\n\n = = Section = = \n\n More alpha .\n\n = Beta = \n\n Beta text .\n"
    )
    (tmp_path / "wiki.txt").write_text(text)
    docs = load_text_file(str(tmp_path / "wiki.txt"))["text"]
    assert (
        len(docs) == 2
        and docs[0].startswith("= Alpha =")
        and "More alpha" in docs[0]
        and docs[1].startswith("= Beta =")
    )


def test_text_column_is_renamed(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCS))
    )
    assert load_text_file(str(tmp_path / "d.jsonl"), text_column="body")["text"] == DOCS


def test_stream_reads_only_a_bounded_prefix():
    stream = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(100)]}).to_iterable_dataset()
    assert _materialize_stream(stream, 5)["text"] == [f"doc {i}" for i in range(5)]
    with pytest.raises(DataError, match="max_train_documents"):
        _materialize_stream(stream, 0)


def test_embedded_corpus_is_real_deterministic_text():
    docs = embedded_documents()
    assert docs == embedded_documents()
    assert sum(map(len, docs)) > 400_000 and len(docs) > 300
    assert any("for" in d and "statement" in d for d in docs)
