"""tiktoken fast path: the same ids as `tokenizers` wherever it is taken, and `tokenizers` where it is not."""

from __future__ import annotations

import json
import logging
import pickle

import datasets
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from pretrain.data.fast_encode import TiktokenBatchEncoder, batch_encoder
from pretrain.data.packing import tokenize_dataset
from pretrain.data.text import embedded_documents
from pretrain.data.tokenizer import train_bpe_tokenizer
from pretrain.objectives.t5 import sentinel_tokens

WIKITEXT_LIKE = [
    " = Valkyria Chronicles III = \n",
    " The game 's battle system , the BliTZ system , is carried over @-@ directly from <unk> . \n",
    ' In 1 @,@ 000 AD the <unk> <unk> met 3 @.@ 5 km away ; <unk>\'s son said " no " .\n',
    "literal </s> and <s> and <pad> and <mask> inside text, and <unk>at edges<unk>",
    "<extra_id_0> a sentinel <extra_id_1><extra_id_10> and <extra_id_ broken",
]
ODD_TEXT = [
    "",
    " ",
    "\n\n\n",
    "tabs\tand\t\tmore\t \t",
    "trailing spaces   ",
    "   leading spaces",
    "mixed \r\n line\u2028ends\u0085 and\u00a0nbsp\u3000ideographic space",
    "Café naïve résumé Ærøskøbing Straße façade",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 and ZWJ\u200dtext",
    "digits 0123456789 3.14159 1e-10 ١٢٣ ٤٥٦ Ⅻ ½",
    "I'm he's we've they'll she'd it's don't 'S 'LL O'Neil",
    "punctuation!!! ??? ... --- (((brackets))) {json: [1, 2]} <html>&amp;</html>",
    "combining e\u0301 and a\u0308, RTL עברית العربية, Devanagari हिन्दी",
]


def _texts() -> list[str]:
    return embedded_documents()[:200] + WIKITEXT_LIKE + ODD_TEXT + ["".join(ODD_TEXT + WIKITEXT_LIKE)]


def _train(vocab_size: int, extra_special_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    ds = datasets.Dataset.from_dict({"text": embedded_documents()[:300] + WIKITEXT_LIKE})
    return train_bpe_tokenizer(ds, vocab_size, extra_special_tokens)


def _reference_ids(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


@pytest.mark.parametrize(
    "vocab_size, extra_special_tokens", [(512, ()), (2048, ()), (1024, sentinel_tokens(100))]
)
def test_tiktoken_gives_the_ids_tokenizers_gives(vocab_size, extra_special_tokens):
    tokenizer = _train(vocab_size, extra_special_tokens)
    encode = batch_encoder(tokenizer)
    assert isinstance(encode, TiktokenBatchEncoder)  # our trained tokenizers take the fast path
    texts = _texts()
    assert [ids.tolist() for ids in encode(texts)] == _reference_ids(tokenizer, texts)
    unk_id = tokenizer.convert_tokens_to_ids("<unk>")
    assert unk_id in encode(["a <unk> b"])[0].tolist()  # literal added tokens stay one token


def test_plain_special_tokens_match_tokenizers_encode_special_tokens():
    # data.special_tokens_in_text=plain: "</s>" in the text is four characters, on either path.
    texts = _texts()
    for tokenizer in (_train(1024, sentinel_tokens(10)), _with_spec(_train(512), _prefix_space)):
        encode = batch_encoder(tokenizer, "plain")
        reference = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        reference.encode_special_tokens = True
        expected = [e.ids for e in reference.encode_batch_fast(texts, add_special_tokens=False)]
        assert [ids.tolist() for ids in encode(texts)] == expected
        assert [ids.tolist() for ids in pickle.loads(pickle.dumps(encode))(texts)] == expected
        assert tokenizer.backend_tokenizer.encode_special_tokens is False  # its own backend untouched
    ids = batch_encoder(tokenizer, "plain")(["a </s> <unk> b"])[0].tolist()
    assert not set(ids) & set(tokenizer.all_special_ids)


def test_every_unicode_character_splits_and_merges_the_same():
    # The two libraries run the split regex on different engines (oniguruma, fancy-regex): every
    # code point, alone, between letters and after a space, must land in the same piece.
    tokenizer = _train(512)
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000][::7]
    texts = ["".join(chars[i : i + 400]) for i in range(0, len(chars), 400)]
    texts += ["a".join(chars[i : i + 400]) for i in range(0, len(chars), 400)]
    texts += [" ".join(chars[i : i + 400]) for i in range(0, len(chars), 400)]
    assert [ids.tolist() for ids in batch_encoder(tokenizer)(texts)] == _reference_ids(tokenizer, texts)


def _with_spec(tokenizer: PreTrainedTokenizerFast, edit) -> PreTrainedTokenizerFast:
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    edit(spec)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token="</s>")


def _swap_two_merges(spec: dict) -> None:
    merges = spec["model"]["merges"]
    merges[10], merges[20] = merges[20], merges[10]


def _prefix_space(spec: dict) -> None:
    spec["pre_tokenizer"]["add_prefix_space"] = True


def _single_word_mask(spec: dict) -> None:
    next(t for t in spec["added_tokens"] if t["content"] == "<mask>")["single_word"] = True


def test_a_stripping_mask_token_keeps_the_fast_path_and_its_texts_go_through_tokenizers():
    # The masked objective makes <mask> absorb the spaces before it (lstrip), as RoBERTa's does.
    from tokenizers import AddedToken

    tokenizer = _train(512)
    tokenizer.add_special_tokens({"mask_token": AddedToken("<mask>", lstrip=True, special=True)})
    encode = batch_encoder(tokenizer)
    assert isinstance(encode, TiktokenBatchEncoder)
    texts = _texts() + ["a <mask> b", "   <mask>  x", "<mask><mask> <mask>", "no mask here", "a  <mask>."]
    assert [ids.tolist() for ids in encode(texts)] == _reference_ids(tokenizer, texts)
    assert [ids.tolist() for ids in pickle.loads(pickle.dumps(encode))(texts)] == _reference_ids(
        tokenizer, texts
    )


@pytest.mark.parametrize(
    "edit, reason",
    [
        (_swap_two_merges, "merged-token ids do not increase"),
        (_prefix_space, "pre-tokenizer"),
        (_single_word_mask, "single_word"),
    ],
)
def test_tokenizers_is_kept_when_tiktoken_could_differ(edit, reason, caplog):
    tokenizer = _with_spec(_train(512), edit)
    with caplog.at_level(logging.DEBUG, logger="pretrain.data.fast_encode"):
        encode = batch_encoder(tokenizer)
    assert not isinstance(encode, TiktokenBatchEncoder)
    assert reason in caplog.text
    texts = _texts()
    assert [ids.tolist() for ids in encode(texts)] == _reference_ids(tokenizer, texts)


def test_a_normalizer_keeps_tokenizers():
    tokenizer = _train(512)
    tokenizer.backend_tokenizer.normalizer = normalizers.NFKC()
    assert not isinstance(batch_encoder(tokenizer), TiktokenBatchEncoder)


def test_a_token_bpe_cannot_reach_keeps_tokenizers():
    # Merges b+c, then a+b, then ab+c: ids rise with the merge index and each token has one merge,
    # yet BPE turns "abc" into [a, bc] while tiktoken, merging any adjacent pair that forms a token,
    # gives [abc]. The self-check (every token is what BPE makes of its bytes) must catch it.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"</s>": 0} | {c: i + 1 for i, c in enumerate(sorted(alphabet))}
    merges = [("b", "c"), ("a", "b"), ("ab", "c")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.add_special_tokens(["</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    assert not isinstance(batch_encoder(tokenizer), TiktokenBatchEncoder)
    reference = _reference_ids(tokenizer, ["abc"])
    assert [tokenizer.convert_ids_to_tokens(i) for i in reference[0]] == ["a", "bc"]
    unchecked = TiktokenBatchEncoder(backend.to_str())  # what skipping the check would have given
    assert unchecked(["abc"])[0].tolist() == [vocab["abc"]]


def test_fingerprint_is_deterministic_and_workers_agree(tmp_path):
    tokenizer = _train(1024)
    tokenizer.save_pretrained(str(tmp_path))
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path))
    ds = datasets.Dataset.from_dict({"text": _texts()})
    one = tokenize_dataset(ds, tokenizer)
    assert tokenize_dataset(ds, reloaded)._fingerprint == one._fingerprint  # so the map cache is reused
    two_workers = tokenize_dataset(ds, tokenizer, num_proc=2)
    assert two_workers["input_ids"] == one["input_ids"]
    encode = batch_encoder(tokenizer)
    restored = pickle.loads(pickle.dumps(encode))  # how worker processes receive it
    texts = _texts()
    assert [ids.tolist() for ids in restored(texts)] == [ids.tolist() for ids in encode(texts)]
