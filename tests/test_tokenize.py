"""Sentence splitting and word tokenization: exact outputs for the rules in hanclf/tokenize.py."""

from __future__ import annotations

import time

import pytest

from hanclf.tokenize import tokenize, tokenize_all

# (text, tokenize(text)): each row pins one rule of the module docstring.
CASES = [
    # HTML: block tags break, inline tags vanish, entities decode
    ("Great film.<br /><br />Loved it", [["Great", "film", "."], ["Loved", "it"]]),
    ("First part<br/>second part", [["First", "part"], ["second", "part"]]),
    ("one<br>two<p>three</p>four", [["one"], ["two"], ["three"], ["four"]]),
    ("This is <i>really</i> <b>good</b> stuff", [["This", "is", "really", "good", "stuff"]]),
    # any HTML element's tags go (what they enclose stays); a made-up tag is the reviewer's words
    ("<script>alert</script> Bad <!-- so --> food.", [["alert", "Bad", "so", "food", "."]]),
    ("<table><tr><td>Great</td><td>food</td></tr></table>", [["Great"], ["food"]]),
    ("<style>red</style> Nice <sarcasm>", [["red", "Nice", "<", "sarcasm", ">"]]),
    (
        'See <a href="http://x.com">this site</a> and <span class="x">that</span> now',
        [["See", "this", "site", "and", "that", "now"]],
    ),
    (
        "I don&#039;t care &amp; you &quot;know&quot; it &lt;3",
        [["I", "don't", "care", "&", "you", '"', "know", '"', "it", "<3"]],
    ),
    ("Two&lt;br&gt;lines", [["Two"], ["lines"]]),
    # newlines
    ("Line one\nline two\n\n\nline three", [["Line", "one"], ["line", "two"], ["line", "three"]]),
    ("Windows\r\nstyle", [["Windows"], ["style"]]),
    # end marks
    (
        "It was good. It was fun! Was it? Yes",
        [["It", "was", "good", "."], ["It", "was", "fun", "!"], ["Was", "it", "?"], ["Yes"]],
    ),
    (
        "Wow!!! Really?!? Yes... Great",
        [["Wow", "!!!"], ["Really", "?!?"], ["Yes", "..."], ["Great"]],
    ),
    ("It was good. the end", [["It", "was", "good", "."], ["the", "end"]]),
    ("great food! will come again", [["great", "food", "!"], ["will", "come", "again"]]),
    ("the film.The end", [["the", "film", "."], ["The", "end"]]),
    ("Why???", [["Why", "???"]]),
    # abbreviations never end a sentence and keep their dots
    (
        "Mr. Smith and Mrs. Jones met Dr. Who. Then Prof. X left.",
        [["Mr.", "Smith", "and", "Mrs.", "Jones", "met", "Dr.", "Who", "."],
         ["Then", "Prof.", "X", "left", "."]],
    ),
    (
        "Ms. Lee, Sr. Perez, Jr. Doe and St. Louis.",
        [["Ms.", "Lee", ",", "Sr.", "Perez", ",", "Jr.", "Doe", "and", "St.", "Louis", "."]],
    ),
    (
        "Alien vs. Predator was out in Jan. 2004.",
        [["Alien", "vs.", "Predator", "was", "out", "in", "Jan.", "2004", "."]],
    ),
    (
        "J. K. Rowling wrote it. J.R.R. Tolkien too.",
        [["J.", "K.", "Rowling", "wrote", "it", "."], ["J.R.R.", "Tolkien", "too", "."]],
    ),
    (
        "I like films, e.g. Alien, i.e. horror. Made in the U.S. and the U.K. by 5 p.m. today.",
        [["I", "like", "films", ",", "e.g.", "Alien", ",", "i.e.", "horror", "."],
         ["Made", "in", "the", "U.S.", "and", "the", "U.K.", "by", "5", "p.m.", "today", "."]],
    ),
    (
        "Scene No. 5 was great. I said no. Then left.",
        [["Scene", "No.", "5", "was", "great", "."], ["I", "said", "no", "."],
         ["Then", "left", "."]],
    ),
    (
        "Acme Inc. and Foo Ltd. and Bar Co. sell stuff.",
        [["Acme", "Inc.", "and", "Foo", "Ltd.", "and", "Bar", "Co.", "sell", "stuff", "."]],
    ),
    # phrase-closing abbreviations end a sentence only before a capital
    (
        "We ate, drank etc. and left. Apples, pears etc. The end.",
        [["We", "ate", ",", "drank", "etc.", "and", "left", "."], ["Apples", ",", "pears", "etc."],
         ["The", "end", "."]],
    ),
    (
        "We left at 5 p.m. The show was over.",
        [["We", "left", "at", "5", "p.m."], ["The", "show", "was", "over", "."]],
    ),
    ("so did I. Then we left", [["so", "did", "I", "."], ["Then", "we", "left"]]),
    # numbers
    (
        "It costs $12.99 or 3.5 euros, 1,000 yen, 50% off",
        [["It", "costs", "$", "12.99", "or", "3.5", "euros", ",", "1,000", "yen", ",", "50%",
          "off"]],
    ),
    (
        "I give it 9/10. Maybe 10/10 at 10:30.",
        [["I", "give", "it", "9/10", "."], ["Maybe", "10/10", "at", "10:30", "."]],
    ),
    # ellipsis: one token; a break only before a non-lowercase word
    (
        "I thought... maybe not. Then… nothing",
        [["I", "thought", "...", "maybe", "not", "."], ["Then", "…", "nothing"]],
    ),
    ("Wait... What? Oh", [["Wait", "..."], ["What", "?"], ["Oh"]]),
    ("Well … OK", [["Well", "…"], ["OK"]]),
    ("...and", [["...", "and"]]),
    (
        "Wait . . . what . . . Okay",
        [["Wait", ".", ".", ".", "what", ".", ".", "."], ["Okay"]],
    ),
    # closing quotes and brackets stay with their sentence
    (
        'He said "wow." Then left.',
        [["He", "said", '"', "wow", ".", '"'], ["Then", "left", "."]],
    ),
    (
        '"Why?" he asked. (It was late!) We left.',
        [['"', "Why", "?", '"', "he", "asked", "."], ["(", "It", "was", "late", "!", ")"],
         ["We", "left", "."]],
    ),
    (
        "She said 'no.' Then she left.",
        [["She", "said", "'", "no", ".", "'"], ["Then", "she", "left", "."]],
    ),
    # contractions are one token; other apostrophes are quotes
    (
        "I'm sure it's fine, don't worry, we’re OK and they'll come",
        [["I'm", "sure", "it's", "fine", ",", "don't", "worry", ",", "we’re", "OK", "and",
          "they'll", "come"]],
    ),
    (
        "The dogs' bones and 'quotes' here",
        [["The", "dogs", "'", "bones", "and", "'", "quotes", "'", "here"]],
    ),
    # emoticons and emoji
    (
        "Loved it :) :-) :( ;) :D <3 :P ^_^ -_- o_O",
        [["Loved", "it", ":)", ":-)", ":(", ";)", ":D", "<3", ":P", "^_^", "-_-", "o_O"]],
    ),
    ("Time: 10 :(", [["Time", ":", "10", ":("]]),
    ("Great! :) Will return.", [["Great", "!", ":)"], ["Will", "return", "."]]),
    (
        "Amazing!! 😍😍 Going back",
        [["Amazing", "!!", "😍", "😍"], ["Going", "back"]],
    ),
    ("So good 😀👍🏽 ❤️ 🇺🇸 yes", [["So", "good", "😀", "👍🏽", "❤️", "🇺🇸", "yes"]]),
    # non-English letters
    (
        "café naïve Zürich São Paulo Ελληνικά Москва",
        [["café", "naïve", "Zürich", "São", "Paulo", "Ελληνικά", "Москва"]],
    ),
    ("cafe\u0301 au lait", [["café", "au", "lait"]]),
    # hyphens join, dashes split
    (
        "A well-made, state-of-the-art film -- truly — great - ok",
        [["A", "well-made", ",", "state-of-the-art", "film", "--", "truly", "—", "great", "-",
          "ok"]],
    ),
    # URLs and e-mail addresses
    (
        "See http://example.com/a?b=1. Or www.yelp.com. Mail me@x.org today",
        [["See", "http://example.com/a?b=1", "."], ["Or", "www.yelp.com", "."],
         ["Mail", "me@x.org", "today"]],
    ),
    (
        "Bought it on Amazon.com for 20 bucks (https://amzn.to/x).",
        [["Bought", "it", "on", "Amazon.com", "for", "20", "bucks", "(", "https://amzn.to/x", ")",
          "."]],
    ),
    ("Write to john.smith@gmail.com now", [["Write", "to", "john.smith@gmail.com", "now"]]),
    # punctuation
    (
        'Good; bad: ugly (really) "yes"',
        [["Good", ";", "bad", ":", "ugly", "(", "really", ")", '"', "yes", '"']],
    ),
    # edges
    ("", []),
    ("   \n\t ", []),
    ("\u200b\ufeff", []),
    ("hello", [["hello"]]),
    ("!!!", [["!!!"]]),
    ("?!", [["?!"]]),
    (". . .", [[".", ".", "."]]),
    ("Hi\u200b there\u00a0friend", [["Hi", "there", "friend"]]),
    # format characters inside words: dropped, the word kept whole
    ("won\u00adderful", [["wonderful"]]),
    ("Good \u202eevil\u202c text, \u2067isolated\u2069", [["Good", "evil", "text", ",", "isolated"]]),
    ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", [["\u0645\u06cc\u062e\u0648\u0627\u0647\u0645"]]),  # Persian, with a ZWNJ
    ("word\u2060joined", [["wordjoined"]]),
    # scripts whose words carry combining marks (vowel signs, viramas, points): one token a word
    ("नमस्ते दुनिया।", [["नमस्ते", "दुनिया", "।"]]),
    ("مَطْعَم جَيِّد", [["مَطْعَم", "جَيِّد"]]),
    ("שָׁלוֹם עוֹלָם", [["שָׁלוֹם", "עוֹלָם"]]),
    ("อาหารอร่อยมาก", [["อาหารอร่อยมาก"]]),
    # Chinese and Japanese, written without spaces: a token a character (a whole clause was one
    # token, an unknown word), sentences ending at 。！？ (and at ! or ? right after them)
    ("这家餐厅很好吃。服务也不错！", [["这", "家", "餐", "厅", "很", "好", "吃", "。"],
                               ["服", "务", "也", "不", "错", "！"]]),
    ("「美味しい！」と言った", [["「", "美", "味", "し", "い", "！", "」"], ["と", "言", "っ", "た"]]),
    ("iPhone很好用!!!推荐 Great!!ok", [["iPhone", "很", "好", "用", "!!!"], ["推", "荐", "Great", "!!", "ok"]]),
    ("한국 음식 맛있어요", [["한국", "음식", "맛있어요"]]),  # Korean is spaced: words stay whole
    # other scripts' full stops and question marks end sentences (a Hindi review was one sentence)
    ("खाना अच्छा था। सेवा धीमी थी", [["खाना", "अच्छा", "था", "।"], ["सेवा", "धीमी", "थी"]]),
    ("الطعام لذيذ؟ نعم", [["الطعام", "لذيذ", "؟"], ["نعم"]]),
    ("یہ اچھا ہے۔بہت", [["یہ", "اچھا", "ہے", "۔"], ["بہت"]]),
    ("ভালো খাবার", [["ভালো", "খাবার"]]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(t)[:40] for t, _ in CASES])
def test_tokenize(text, expected):
    assert tokenize(text) == expected


@pytest.mark.parametrize("missing", [None, float("nan"), b"bytes"])
def test_none_like_text_gives_nothing(missing):
    assert tokenize(missing) == []


def test_long_document_is_linear():
    paragraph = "The movie was great. Mr. Smith said it's a 9/10! I'd watch it again... Would you? "
    repeats = 1_000_000 // len(paragraph)
    start = time.perf_counter()
    doc = tokenize(paragraph * repeats)
    elapsed = time.perf_counter() - start
    assert len(doc) == 4 * repeats
    assert doc[:4] == [
        ["The", "movie", "was", "great", "."],
        ["Mr.", "Smith", "said", "it's", "a", "9/10", "!"],
        ["I'd", "watch", "it", "again", "..."],
        ["Would", "you", "?"],
    ]
    assert elapsed < 5


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("word" + " " * 1_000_000 + "\u200b", 1),  # a token search failing after a long blank run
        ("ab." * 300_000, 1),
        ("!" * 1_000_000, 1),
        (". " * 500_000, 1),
        ("<b " * 300_000, 1),
        ("Wow! " + ":) " * 300_000, 1),
        ("<!-- " * 200_000, 0),
        ("<script> " * 100_000, 0),
    ],
    ids=["blank run", "dotted chain", "bangs", "spaced dots", "open tags", "emoticons",
         "open comments", "open scripts"],
)
def test_adversarial_input_is_linear(text, sentences):
    start = time.perf_counter()
    assert len(tokenize(text)) == sentences
    assert time.perf_counter() - start < 5


def test_tokenize_all_is_tokenize_of_each_and_restores_the_garbage_collector():
    import gc

    texts = [case[0] for case in CASES] + [None, ""]
    assert gc.isenabled()
    assert tokenize_all(texts) == [tokenize(t) for t in texts]
    assert gc.isenabled()
    gc.disable()
    try:
        tokenize_all(texts)
        assert not gc.isenabled()  # a caller's own setting is left as it was
    finally:
        gc.enable()


# Texts that touch every rule of the module docstring. Their output must never change under one
# TOKENIZER_VERSION: models keep the version they were trained with, and a model tokenized
# differently at prediction than in training loses accuracy with no error. Frozen: add no text
# here (new cases belong in CASES), or the digests of earlier versions stop meaning anything.
VERSIONED_TEXTS = [
    "The food was great. Mr. Smith said it's a 9/10! I'd go again... Would you? Yes!!! Wow?!",
    "Dr. Who met Prof. X on Jan. 5 at 10:30 a.m. Then we left. See No. 5, e.g. the U.S. one.",
    "J. K. Rowling wrote it. etc. Then more. We paid $12.99 (50% off) for 1,000 grams.",
    "He said \"wow.\" Then left. \"Why?\" he asked. (It was fine.) Next one.",
    "Great! :) Back soon :-( ;) :D :P <3 ^_^ -_- o_O bye",
    "I loved it 👍🏽 and 👨‍👩‍👧 came too 🇫🇷! Really.",
    "Line one\nLine two<br />Line three<p>Four</p><div>five</div><li>six</li>",
    "<i>Italic</i> &amp; <b>bold</b> &lt;br&gt; <a href='x'>link</a> <sarcasm>great</sarcasm>",
    "<script>var x = 1;</script> visible <!-- hidden --> text",
    "Visit https://example.com/path?q=1. Or www.example.org, shop.co.uk and me@mail.com today",
    "well-made R&B don't don’t I'm co-op -- film.The end… . . . done..",
    "这家餐厅很好。服务也不错！你去过吗？ 日本語のテキストです。",
    "नमस्ते दोस्त। مَطْعَم جيد؟ שָׁלוֹם עולם",
    "Café naïve coöperate résumé – ﬁne soft\u00adhyphen zero\u200bwidth word\u2060joiner",
    "ALL CAPS REVIEW!!! terrible terrible TERRIBLE.",
    "it was ok . not great . the end",
    "Inc. Ltd. Co. Corp. report: Acme Inc. Big news. Acme Corp. grew",
    "St. Louis and Mt. Everest vs. Sept. rain; Jr. and Sr. met",
    "Tabs\tand  spaces \r\n and\u2028separators\u2029here\x1cnow",
    "",
    "   ",
]

# TOKENIZER_VERSION -> sha256 of the JSON of [tokenize(t) for t in VERSIONED_TEXTS].
OUTPUT_DIGESTS = {1: "5284934e289f00904fb4135860a916293bf3e1797736ffda0db20ee32c883062"}


def test_tokenizer_output_changes_only_with_its_version():
    import hashlib
    import json

    from hanclf.tokenize import TOKENIZER_VERSION

    output = json.dumps([tokenize(t) for t in VERSIONED_TEXTS], ensure_ascii=True)
    digest = hashlib.sha256(output.encode()).hexdigest()
    assert digest == OUTPUT_DIGESTS.get(TOKENIZER_VERSION), (
        "tokenize's output changed: raise TOKENIZER_VERSION in hanclf/tokenize.py and add "
        f"{TOKENIZER_VERSION + 1}: '{digest}' to OUTPUT_DIGESTS (models trained before will "
        "then warn that they were tokenized differently)")
