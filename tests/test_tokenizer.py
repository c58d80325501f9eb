"""The runtime CLIP tokenizer gives the ids of open_clip 3.3.0's ``tokenize``: golden case and live comparison."""
from __future__ import annotations

import gzip
import importlib
import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.tokenizer import VOCAB_FILE, ClipTokenizer, byte_alphabet, clean_text
from tests.paths import REPO

VARIED_TEXTS = [
    "a corgi running on the beach, 4k",
    "",
    "   ",
    "A DOG 123 barking at 4:30pm #tag",
    "naïve café — Ünïcödé",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ and ligatures ﬁ ﬂ",
    "日本語のテキスト、中文字符和한국어",
    "emoji 🐶🐱‍👤 👩🏽‍🚀 ❤️ 🇫🇷",
    "html &amp; entities &lt;b&gt; &amp;amp; &quot;quoted&quot; &#39;x&#39; &eacute;",
    "punctuation!!! ??? ... --- (brackets) [x] {y} <z> @#$%^&*_+=|\\/~`",
    "numbers 3.14159 1,000,000 2024-01-01 ½ ² ٣ 一二三",
    "tabs\tand\nnewlines\r\n  and   runs\u00a0of\u2003spaces",
    "contractions: it's they're we've I'm you'll he'd don't",
    "IT'S UPPER 'S 'T, and the long s: it'ſ",
    "<b>tags keep ftfy from unescaping: &amp;amp; &lt;i&gt;</b>",
    "mojibake: cafÃ© donâ€™t",
    "<start_of_text> literal special tokens <end_of_text>",
    "zero\u200bwidth and combining e\u0301 a\u0308",
    "Ελληνικά кириллица עברית العربية हिन्दी",
    "long " * 200,
    "a photo of " + "very " * 80 + "long prompt with ending words",
]


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def open_clip_tokenize():
    """``open_clip.tokenize`` from the installed package, without running ``open_clip/__init__.py``.

    The package's ``__init__`` needs torchvision (not installed); its tokenizer module needs
    only torch, ftfy and regex, so it is imported under a stub parent package.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed: the live comparison with open_clip.tokenize needs it")
    saved = {name: sys.modules.pop(name) for name in ("open_clip", "open_clip.tokenizer") if name in sys.modules}
    stub = types.ModuleType("open_clip")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["open_clip"] = stub
    try:
        module = importlib.import_module("open_clip.tokenizer")
    finally:
        for name in ("open_clip", "open_clip.tokenizer"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return lambda texts, context_length=77: module.tokenize(texts, context_length=context_length).numpy()


def test_golden_case(tokenizer, reference):
    io = np.load(reference / "videocrafter1" / "golden" / "tokenizer_openclip" / "io.npz")
    strings = [str(s) for s in io["strings"]]
    ids = tokenizer(strings, context_length=77)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, io["ids"])


def test_shape_padding_and_truncation(tokenizer):
    ids = tokenizer(["a dog", "word " * 100], context_length=77)
    assert ids.shape == (2, 77) and ids.dtype == np.int64
    start, end = tokenizer.start_id, tokenizer.end_id
    assert (start, end) == (49406, 49407)
    assert list(ids[0, :4]) == [start, *tokenizer.encode("a dog"), end] and not ids[0, 4:].any()
    assert ids[1, 0] == start and ids[1, -1] == end and (ids[1, 1:-1] != end).all()


def test_single_string_and_context_length(tokenizer):
    assert tokenizer("a dog").shape == (1, 77)
    assert tokenizer("a dog", context_length=16).shape == (1, 16)
    with pytest.raises(ValueError, match="at least 2"):
        tokenizer("a dog", context_length=1)


def test_bpe_cache_is_per_instance(tokenizer):
    other = ClipTokenizer(VOCAB_FILE)
    other.encode("zebra")
    assert tokenizer._bpe_cache is not other._bpe_cache
    assert any(piece.startswith("zebra") for piece in other._bpe_cache)


def test_byte_alphabet_is_a_bijection():
    chars = byte_alphabet()
    assert sorted(chars) == list(range(256)) and len(set(chars.values())) == 256
    assert all(not c.isspace() for c in chars.values())


def test_clean_text_lowercases_and_collapses():
    assert clean_text("  Hello\t\nWORLD &amp;amp; ") == "hello world &"


def test_not_a_vocabulary_file(tmp_path):
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt") as f:
        f.write("header\na b\n")
    with pytest.raises(ValueError, match="not a CLIP BPE vocabulary"):
        ClipTokenizer(bad)


@pytest.mark.parametrize("context_length", [77, 8])
def test_matches_open_clip_on_varied_text(tokenizer, open_clip_tokenize, context_length):
    expected = open_clip_tokenize(VARIED_TEXTS, context_length=context_length)
    np.testing.assert_array_equal(tokenizer(VARIED_TEXTS, context_length=context_length), expected)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60) | st.text(alphabet=st.characters(max_codepoint=0x3FF), max_size=400))
def test_matches_open_clip_on_random_unicode(tokenizer, open_clip_tokenize, text):
    np.testing.assert_array_equal(tokenizer(text), open_clip_tokenize(text))


def test_runtime_tokenizer_does_not_import_torch():
    code = "import sys, runtime.tokenizer; assert 'torch' not in sys.modules, 'runtime.tokenizer imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
