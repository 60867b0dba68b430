"""Make tokenizer.json: a small XLM-RoBERTa-style Unigram tokenizer, trained here, offline.

1. A multilingual corpus is written from the word lists below (deterministic seed): Latin scripts with accents,
   Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai, Chinese, Japanese, Korean, digits, punctuation, emoji.
2. SentencePiece trains a unigram model on it with the `nmt_nfkc` normalization rule, so the model carries a real
   precompiled charsmap (NFKC plus SentencePiece's NMT clean-up), as XLM-R's sentencepiece.bpe.model does.
3. transformers' XLMRobertaConverter (convert_slow_tokenizer) turns it into a `tokenizers` tokenizer.json the way
   XLM-R's tokenizer.json was made: <s> <pad> </s> <unk> first, the pieces, <mask> last; Precompiled, then
   Strip/Replace normalizers; Metaspace; the "<s> $A </s>" template. The five special tokens are added as XLM-R's
   file has them (<mask> with lstrip).

Needs `sentencepiece` and `protobuf` besides the dev venv; install them outside .venv, e.g.
    pip install --target /tmp/spm sentencepiece
    PYTHONPATH=/tmp/spm .venv/bin/python tests/data/unigram/make_tokenizer.py
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import sentencepiece as spm
from tokenizers import AddedToken
from transformers.convert_slow_tokenizer import XLMRobertaConverter

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 3000
SEED = 20261205

WORDS = {
    "en": "the of and to in is was for on that with as by at from this have not are but they which one all "
          "were been their there when can would about more water river mountain city people language machine "
          "learning embedding sentence search question answer document retrieval multilingual model small "
          "serverless function cold start memory weights token vector query passage",
    "fr": "le la les des une est été être avoir très déjà où là çà français élève garçon noël forêt fenêtre "
          "château hôpital cœur sœur œuvre naïve maïs réponse question recherche phrase modèle langue",
    "de": "der die das und ist nicht mit für über schön größe straße mädchen müde öffnen äpfel übung "
          "fußball weiß heißen grüße zurück frühstück bücher häuser",
    "es": "el los las una por para como más también niño niña año mañana señor corazón canción pingüino "
          "acción aquí allí está están pregunta respuesta",
    "pt": "não são também você está coração ação informação pão mãe irmã avó avô português",
    "pl": "że się jest nie być łódź żółw źródło ćma gęś ściana przyjaciel język",
    "cs": "řeka čeština škola žena ďábel ťuk ňadro úvod kůň",
    "tr": "için değil çok güzel şehir ığdır öğrenci ülke İstanbul ılık",
    "vi": "tiếng việt người nước không được những chúng tôi điều",
    "el": "και το της του ένα είναι δεν για στο με από γλώσσα ερώτηση απάντηση θάλασσα ουρανός Αθήνα ψυχή",
    "ru": "и в не на что он как это по но они мы она язык вопрос ответ поиск предложение модель Москва ёлка",
    "uk": "і в що це мова питання відповідь їжа ґанок",
    "ar": "في من على إلى أن هذا هذه التي الذي كان لغة سؤال جواب بحث جملة نموذج القاهرة مرحبا",
    "he": "של את על זה לא עם הוא היא שפה שאלה תשובה חיפוש ירושלים שלום",
    "hi": "और का की के में है हैं यह वह भाषा प्रश्न उत्तर खोज वाक्य मॉडल दिल्ली नमस्ते क्षत्रिय",
    "th": "และ ของ ที่ ใน เป็น ภาษา คำถาม คำตอบ ค้นหา ประโยค กรุงเทพ สวัสดี",
    "zh": "的 一 是 不 了 在 人 有 我 他 这 个 们 中 来 上 大 为 和 国 语言 问题 答案 搜索 句子 模型 北京 你好 学习 机器",
    "ja": "の に は を た が で て と し れ さ ある いる する 言語 質問 回答 検索 文章 東京 こんにちは カタカナ ひらがな",
    "ko": "의 이 가 은 는 을 를 에 하다 있다 언어 질문 대답 검색 문장 모델 서울 안녕하세요",
}
EXTRAS = ["2026", "3.14", "100%", "1,000", "(a)", "[b]", "e-mail", "C++", "x86_64", "https://example.com",
          "😀", "👍🏽", "🇫🇷", "…", "—", "«»", "“”", "‘’", "ﬁ", "①", "Ⅻ", "ｶﾀｶﾅ", "ＡＢＣ", "½", "™", "µ", "Å"]


def corpus(n_sentences: int = 40000) -> list[str]:
    rng = random.Random(SEED)
    langs = sorted(WORDS)
    words = {lang: WORDS[lang].split() for lang in langs}
    lines = []
    for _ in range(n_sentences):
        lang = rng.choice(langs)
        sentence = [rng.choice(words[lang]) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            sentence.insert(rng.randrange(len(sentence) + 1), rng.choice(EXTRAS))
        if rng.random() < 0.5:
            sentence[0] = sentence[0].capitalize()
        joiner = "" if lang in ("zh", "ja", "th") and rng.random() < 0.7 else " "
        lines.append(joiner.join(sentence) + rng.choice([".", "!", "?", "", "。", "；"]))
    return lines


class _SlowTokenizerStub:
    """What XLMRobertaConverter reads from a slow tokenizer: the model file and the ids of <s> and </s>."""

    add_prefix_space = True

    def __init__(self, vocab_file: str):
        self.vocab_file = vocab_file

    def convert_tokens_to_ids(self, token: str) -> int:
        return {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}[token]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        text.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
        prefix = str(Path(tmp) / "spm")
        spm.SentencePieceTrainer.train(
            input=str(text), model_prefix=prefix, model_type="unigram", vocab_size=VOCAB_SIZE,
            normalization_rule_name="nmt_nfkc", character_coverage=0.9995, seed_sentencepiece_size=200000,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)  # fairseq: pieces[3:] are words
        tokenizer = XLMRobertaConverter(_SlowTokenizerStub(prefix + ".model")).converted()
    tokenizer.add_special_tokens([AddedToken("<s>", normalized=False), AddedToken("<pad>", normalized=False),
                                  AddedToken("</s>", normalized=False), AddedToken("<unk>", normalized=False),
                                  AddedToken("<mask>", lstrip=True, normalized=False)])
    tokenizer.save(str(HERE / "tokenizer.json"), pretty=False)
    print(HERE / "tokenizer.json", tokenizer.get_vocab_size(), "tokens")


if __name__ == "__main__":
    main()
