import json

import pytest
import torch


def test_glide_tokenizer_matches_golden(ref, gpt2_tokenizer):
    golden = json.loads((ref / "glide_tokenizer_golden.json").read_text())
    tok = gpt2_tokenizer
    assert tok.n_vocab == golden["n_vocab"] and tok.end_token == golden["end_token"]
    assert len(golden["cases"]) >= 8
    for text, case in golden["cases"].items():
        ids = tok.encode(text)
        assert ids == case["ids"], text
        padded, mask = tok.padded_tokens_and_mask(ids, golden["text_ctx"])
        assert padded == case["padded"] and mask == case["mask"], text


def test_batch_tensors(gpt2_tokenizer):
    tokens, mask = gpt2_tokenizer.batch(["a boxing glove", ""], 8)
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long and mask.dtype == torch.bool
    assert mask[0].tolist() == [True] * 3 + [False] * 5 and not mask[1].any()
    assert (tokens[1] == gpt2_tokenizer.end_token).all()


def test_missing_vocab_file_is_named(tmp_path):
    from romlib.models.tokenizers import GlideTokenizer

    with pytest.raises(FileNotFoundError, match="nope.json"):
        GlideTokenizer.from_files(tmp_path / "nope.json", tmp_path / "merges.txt")
